"""The domain model plugins write to, and its serialisation to libvirt XML."""
