# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vscen_host_facts: the host as vscen's scenarios see it (``vscen host --json``), as facts."""

DOCUMENTATION = r"""
---
module: vscen_host_facts
short_description: The KVM host as vscen sees it, as facts
description:
  - Returns what C(vscen host --json) prints for the managed node's libvirt host (or the one
    at O(uri)) under the fact C(vscen) (C(ansible_facts.vscen)) - architecture, domain
    type (C(kvm) or C(qemu)), KVM, CPU, NUMA cells with their free memory and huge pages,
    firmware, IOMMU, launch security (SEV, SEV-ES, SEV-SNP, TDX), the facts vscen's plugins read.
  - Changes nothing.
version_added: "0.1.0"
author:
  - vscen contributors
options:
  uri:
    description: The libvirt URI; default the config's C(connect), C(LIBVIRT_DEFAULT_URI) or C(qemu:///system).
    type: str
    aliases: [connect]
  host_facts:
    description: Recorded host facts instead of a live host (C(vscen host --host-facts)), files on the managed node.
    type: list
    elements: path
  vscen_path:
    description: The vscen executable on the managed node; default C(vscen) on C(PATH).
    type: path
notes:
  - If no URI is given and the default daemon cannot be reached, vscen describes libvirt's
    embedded reference host instead, and the task warns.
requirements:
  - vscen on the managed node
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
"""

EXAMPLES = r"""
- name: What each host offers
  vscen.kvm.vscen_host_facts:

- name: Confidential guests only where SEV is offered
  vscen.kvm.vscen_guest:
    name: vault
    scenario: secure-vm
  when: ansible_facts.vscen.facts['launch-security.host'].offered | length > 0
"""

RETURN = r"""
ansible_facts:
  description: Facts added.
  returned: always
  type: dict
  contains:
    vscen:
      description: The JSON document of C(vscen host --json).
      returned: always
      type: dict
      sample: {"connection": "qemu:///system", "arch": "x86_64", "domain_type": "kvm", "kvm": {"usable": true}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vscen.kvm.plugins.module_utils.vscen_cli import load_json, run_vscen


def main():
    module = AnsibleModule(
        argument_spec=dict(
            uri=dict(type="str", aliases=["connect"]),
            host_facts=dict(type="list", elements="path"),
            vscen_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    args = ["host", "--json"]
    if module.params["uri"]:
        args += ["--connect", module.params["uri"]]
    for path in module.params["host_facts"] or ():
        args.append("--host-facts=" + path)
    out, err = run_vscen(module, args)
    facts = load_json(module, out, "host --json")
    for line in err.splitlines():
        if line.startswith(("note: ", "warning: ")):
            module.warn("vscen: " + line.partition(": ")[2])
    module.exit_json(changed=False, ansible_facts=dict(vscen=facts))


if __name__ == "__main__":
    main()
