# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vscen_guest: a libvirt guest prepared by ``vscen run`` for scenarios, or removed by
``vscen destroy``, on the managed node."""

DOCUMENTATION = r"""
---
module: vscen_guest
short_description: A libvirt guest prepared by vscen for a scenario, or removed
description:
  - Builds, validates and defines a libvirt guest for one or more vscen scenarios
    (C(secure-vm), C(desktop), C(computation)...) with C(vscen run), preparing what it needs on
    the host first (volumes, networks, huge pages...), journalled so that a failure rolls back.
  - Idempotent as C(vscen run) is. vscen plans what would change against its own record of the
    guest (the C(domain.xml) and journal in its output directory, and a digest of the XML it
    defined, kept in the domain's metadata), so values libvirt fills in never count as changes.
    When the plan is empty the task reports C(changed=false).
  - A guest that exists with another definition is refused with vscen's message unless
    O(force=true).
  - O(state=absent) runs C(vscen destroy), which removes exactly what vscen made for the guest
    (domain, volumes, networks, secrets, files), newest first; nothing there is C(changed=false).
  - Runs the C(vscen) command on the managed node (O(vscen_path), else C(vscen) on C(PATH)),
    with an argument list, never a shell.
version_added: "0.1.0"
author:
  - vscen contributors
options:
  name:
    description: The guest's name (C(vscen run --name)).
    type: str
    required: true
  state:
    description:
      - C(present) the guest is defined as vscen makes it; C(started) also running
        (C(vscen run --start)); C(absent) everything vscen made for it is gone.
    type: str
    choices: [present, started, absent]
    default: present
  scenario:
    description: The scenarios to combine (C(vscen list scenarios)); required unless O(state=absent).
    type: list
    elements: str
    aliases: [scenarios]
  features:
    description:
      - Features to add (C(+NAME) or C(NAME)) or remove (C(-NAME)), as C(vscen run --feature).
    type: list
    elements: str
    default: []
  settings:
    description:
      - vscen settings, by name, as in vscen's config file (C(memory), C(vcpu), C(network),
        C(virt_type), C(hugepages), C(pool), C(disk.size) or a C(disk) dictionary...); every
        setting a loaded plugin declares is accepted, with the same checks as its C(vscen run)
        option. They are handed to vscen as a private config file above the user's.
      - A key that is an XPath (starting with C(./) or C(/)) customises the finished XML, as
        C(vscen run --set XPATH=VALUE).
    type: dict
    default: {}
  disks:
    description:
      - Disks, each a C(vscen run --disk) spec (C(size=20G,format=qcow2,bus=virtio),
        C(path=/srv/images/x.qcow2), C(backing=/base.qcow2)), or C(none) for no disk.
      - By default the scenario's single disk, sized by the C(disk.size) setting.
    type: list
    elements: str
  uri:
    description:
      - The libvirt URI (C(vscen run --connect)); default the config's C(connect),
        C(LIBVIRT_DEFAULT_URI) or C(qemu:///system).
      - With O(state=absent), the guest is removed where vscen made it unless this is given.
    type: str
    aliases: [connect]
  host_facts:
    description:
      - Recorded host facts to build from instead of asking the host (C(vscen run --host-facts)),
        libvirt capabilities and domcapabilities XML or a C(vscen host snapshot), files on the
        managed node. Without O(uri), vscen then defines the guest on C(test:///default).
    type: list
    elements: path
  output:
    description:
      - The directory of vscen's guest directories (C(<output>/<name>/domain.xml) and the
        journal); default C($XDG_DATA_HOME/vscen).
    type: path
  force:
    description: Replace what exists and differs (C(vscen run --force)); never a disk.
    type: bool
    default: false
  vscen_path:
    description: The vscen executable on the managed node; default C(vscen) on C(PATH).
    type: path
notes:
  - Check mode runs C(vscen run --dry-run --json) and returns the plan and, with C(--diff), the
    domain XML against the one vscen wrote before.
  - If no URI is given and the default daemon cannot be reached, vscen uses libvirt's embedded
    C(test:///default) driver; the task warns, since such a guest is gone when vscen exits.
requirements:
  - vscen on the managed node
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: A confidential guest
  vscen.kvm.vscen_guest:
    name: vault
    scenario: secure-vm
    settings:
      memory: 4GiB
      vcpu: 2
      disk.size: 40G

- name: A number cruncher, started, with huge pages reserved and no audio
  vscen.kvm.vscen_guest:
    name: hpc1
    scenario: [computation]
    state: started
    features: [-watchdog]
    settings:
      hugepages: reserve
      network: network=lab
      ./devices/console/target/@type: serial

- name: Gone, with everything vscen made for it
  vscen.kvm.vscen_guest:
    name: hpc1
    state: absent
"""

RETURN = r"""
plan:
  description: What the run does (in check mode, would do), step by step; empty when the guest matches.
  returned: state is present or started
  type: list
  elements: str
  sample: ["create /var/lib/vscen/ws1", "write /var/lib/vscen/ws1/domain.xml", "define domain on qemu:///system"]
unchanged:
  description: What vscen found up to date.
  returned: state is present or started
  type: list
  elements: str
domain_xml:
  description: The domain XML vscen builds (in check mode and with --diff).
  returned: when vscen was run with --dry-run
  type: str
xml:
  description: Where vscen keeps the guest's domain XML.
  returned: state is present or started
  type: str
summary:
  description: vscen's whole JSON summary (scenarios, features and why, host checks, notes, connection).
  returned: state is present or started
  type: dict
made:
  description: What vscen had made for the guest, by kind (C(vscen status --json)), before it was removed.
  returned: state is absent and the guest existed
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vscen.kvm.plugins.module_utils.vscen_cli import (
    PLAIN,
    SettingsError,
    fail,
    load_json,
    split_settings,
    to_toml,
    vscen_command,
    warn_lines,
    write_private,
)

#: what ``vscen status`` and ``destroy`` say of a guest they did not make (no journal)
NOT_MADE = "vscen made no guest"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "started", "absent"]),
            scenario=dict(type="list", elements="str", aliases=["scenarios"]),
            features=dict(type="list", elements="str", default=[]),
            settings=dict(type="dict", default={}),
            disks=dict(type="list", elements="str"),
            uri=dict(type="str", aliases=["connect"]),
            host_facts=dict(type="list", elements="path"),
            output=dict(type="path"),
            force=dict(type="bool", default=False),
            vscen_path=dict(type="path"),
        ),
        required_if=[("state", "present", ["scenario"]), ("state", "started", ["scenario"])],
        supports_check_mode=True,
    )
    if module.params["state"] == "absent":
        absent(module)
    else:
        present(module)


def _vscen(module, args):
    cmd = [vscen_command(module)] + args
    rc, out, err = module.run_command(cmd, environ_update=PLAIN)
    return cmd, rc, out, err


def present(module):
    p = module.params
    for scenario in p["scenario"]:
        if not scenario or scenario.startswith("-"):
            module.fail_json(msg="scenario: '%s' is not a scenario name (see 'vscen list scenarios')" % scenario)
    try:
        values, sets = split_settings(p["settings"])
        config_text = to_toml(values) if values else None
    except SettingsError as exc:
        module.fail_json(msg=str(exc))
    args = ["run", "--json", "--name", p["name"]]
    rewrite = {}
    if config_text is not None:
        config = write_private(module.tmpdir, "vscen-settings.toml", config_text)
        args.append("--config=" + config)
        # vscen names the file in its messages: the user knows it as the task's settings
        rewrite = {"in config " + config: "in the task's settings", "config " + config: "the task's settings",
                   config: "the task's settings"}
    if p["uri"]:
        args += ["--connect", p["uri"]]
    if p["output"]:
        args += ["--output", p["output"]]
    for path in p["host_facts"] or ():
        args.append("--host-facts=" + path)
    for disk in p["disks"] or ():
        args.append("--disk=" + disk)
    for feature in p["features"]:
        args.append("--feature=" + (feature if feature.startswith(("+", "-")) else "+" + feature))
    for item in sets:
        args.append("--set=" + item)
    if p["force"]:
        args.append("--force")
    if p["state"] == "started":
        args.append("--start")
    args += ["--"] + p["scenario"]

    result = dict(name=p["name"], state=p["state"])
    diff = None
    if module.check_mode or module._diff:
        cmd, rc, out, err = _vscen(module, _dry(args))
        if rc != 0:
            fail(module, rc, out, err, cmd, rewrite)
        summary = load_json(module, out, cmd)
        _connection_warning(module, summary, err)
        diff = _diff(summary)
        result.update(_result(summary), domain_xml=summary.get("domain_xml", ""))
        if not summary["plan"]:
            module.exit_json(changed=False, **result)
        if module.check_mode:
            module.exit_json(changed=True, diff=diff, **result)
    cmd, rc, out, err = _vscen(module, args)
    if rc != 0:
        fail(module, rc, out, err, cmd, rewrite)
    summary = load_json(module, out, cmd)
    if diff is None:  # else warned once, in the dry run
        _connection_warning(module, summary, err)
    result.update(_result(summary), applied=summary.get("applied", []), journal=summary.get("journal"))
    changed = bool(summary.get("applied"))
    if changed and diff is not None:
        result["diff"] = diff
    module.exit_json(changed=changed, **result)


def _dry(args):
    """*args* with ``--dry-run``, before the ``--`` that ends the options."""
    cut = args.index("--")
    return args[:cut] + ["--dry-run"] + args[cut:]


def _connection_warning(module, summary, err):
    warn_lines(module, err)
    if summary.get("connection_note"):
        module.warn("vscen: " + summary["connection_note"])


def _result(summary):
    return dict(plan=summary.get("plan", []), unchanged=summary.get("unchanged", []), xml=summary.get("xml"),
                summary={k: v for k, v in summary.items() if k != "domain_xml"})


def _diff(summary):
    """The plan as Ansible's diff: the domain XML vscen would write against the one it wrote
    before (when they differ), and the steps of the plan."""
    path = summary.get("xml") or ""
    before = ""
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                before = fh.read()
        except OSError:
            before = ""
    after = summary.get("domain_xml", "")
    diff = []
    if before != after:
        diff.append(dict(before_header=path or "domain.xml", after_header=path or "domain.xml",
                         before=before, after=after))
    diff.append(dict(before_header="vscen plan (%s)" % summary.get("name", ""),
                     after_header="vscen plan (%s)" % summary.get("name", ""),
                     before="".join("unchanged: %s\n" % u for u in summary.get("unchanged", [])),
                     after="".join("unchanged: %s\n" % u for u in summary.get("unchanged", []))
                     + "".join("%s\n" % step for step in summary.get("plan", []))))
    return diff


def absent(module):
    p = module.params
    name = p["name"]
    status = ["status", "--json"] + (["--output", p["output"]] if p["output"] else []) + ["--", name]
    cmd, rc, out, err = _vscen(module, status)
    if rc != 0:
        if NOT_MADE in err:
            module.exit_json(changed=False, name=name, state="absent")
        fail(module, rc, out, err, cmd)
    rows = load_json(module, out, cmd)
    made = rows[0].get("made", {}) if rows else {}
    result = dict(name=name, state="absent", made=made)
    if module._diff:
        result["diff"] = dict(before_header="vscen made for %s" % name, after_header="vscen made for %s" % name,
                              before="".join("%s: %s\n" % kv for kv in sorted(made.items())), after="")
    if module.check_mode:
        module.exit_json(changed=True, **result)
    destroy = ["destroy"] + (["--output", p["output"]] if p["output"] else []) \
        + (["--connect", p["uri"]] if p["uri"] else []) + ["--", name]
    cmd, rc, out, err = _vscen(module, destroy)
    if rc != 0:
        if NOT_MADE in err:  # another run removed it in between
            module.exit_json(changed=False, **result)
        fail(module, rc, out, err, cmd)
    warn_lines(module, err)
    module.exit_json(changed=True, message=out.strip(), **result)


if __name__ == "__main__":
    main()
