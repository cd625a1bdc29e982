"""Host facts: what the host offers, read from libvirt (and sysfs) or a recorded file."""
