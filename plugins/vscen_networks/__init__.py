"""Host action ``network``: the libvirt network or host bridge the guest's interface needs.

For ``settings.network`` of kind ``network`` (``--network network=NAME``):

- NAME exists and is active: nothing to do (a note says it is unchanged);
- NAME exists but is inactive: start it (record ``network-started``; undo stops it again);
- NAME does not exist: define it, start it and mark it autostart (record ``network``; undo
  stops and undefines it). For ``default`` the definition is libvirt's own stock one
  (``/usr/share/libvirt/networks/default.xml``, NAT and DHCP), read only on this machine: for
  a remote host vscen cannot read that file and says how to define it there. Any other name
  becomes an *isolated* network, ``<network><name>NAME</name></network>``: libvirt picks the
  bridge; no ``<ip>``, so no DHCP and no NAT; guests on it reach only each other (a note says
  so and how to give it addresses).

A definition naming a bridge that another libvirt network already uses is refused before
anything changes. For kind ``bridge`` the host interface is looked up (where the connection
can list host interfaces) and must be a bridge; ``user`` and ``none`` need nothing on the host.

Undo never stops a network that running guests are attached to: it says which and leaves the
record in the journal, so ``vscen destroy`` can be repeated once they are stopped.
"""

from __future__ import annotations

import re

from vscen import HostAction, HostError, LibvirtError, Step, UsageError, VscenError, check_record, hookimpl

#: network name -> libvirt's stock definition of it, read on this machine only
STOCK_DEFINITIONS = {"default": "/usr/share/libvirt/networks/default.xml"}


def _msg(exc) -> str:
    return exc.get_error_message() or str(exc)


def _lookup_network(conn, name: str, uuid: str | None = None):
    """The network (by UUID first, when known), or None where it does not exist."""
    import libvirt

    try:
        if uuid:
            try:
                return conn.networkLookupByUUIDString(uuid)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                return None  # that network is gone; one of the same name is someone else's
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise LibvirtError(f"network: cannot look up network '{name}': {_msg(exc)}") from None


def _bridge_of(xml: str) -> str | None:
    from lxml import etree

    el = etree.fromstring(xml.encode()).find("bridge")
    return el.get("name") if el is not None else None


def _networks_by_bridge(conn) -> dict[str, str]:
    """bridge name -> the libvirt network that uses it."""
    import libvirt

    out = {}
    try:
        for net in conn.listAllNetworks(0):
            bridge = _bridge_of(net.XMLDesc(0))
            if bridge:
                out[bridge] = net.name()
    except libvirt.libvirtError as exc:
        raise LibvirtError(f"network: cannot list libvirt networks: {_msg(exc)}") from None
    return out


def _definition(ctx, name: str) -> tuple[str, str]:
    """(XML, what it is) for a network vscen defines; raises where it cannot be had."""
    uri = ctx.connection.uri
    stock = STOCK_DEFINITIONS.get(name)
    if stock is None:
        from lxml import etree

        root = etree.Element("network")
        etree.SubElement(root, "name").text = name
        ctx.note(
            f"network: '{name}' does not exist on {uri}: vscen defines it isolated (no <ip>: "
            "no DHCP, no NAT; its guests reach only each other). To give it addresses: virsh "
            f"net-edit {name} and add <ip address=ADDRESS prefix=LENGTH><dhcp><range "
            "start=FIRST end=LAST/></dhcp></ip> (plus <forward mode='nat'/> to reach out), then "
            f"virsh net-destroy {name}; virsh net-start {name}"
        )
        return etree.tostring(root, encoding="unicode"), "isolated: no DHCP, no NAT"
    how = (f"virsh net-define {stock}; virsh net-autostart {name}; virsh net-start {name}")
    if not ctx.connection.is_local:
        raise HostError(
            f"network: '{name}' does not exist on {uri}, and vscen cannot read libvirt's stock "
            f"definition ({stock}) on a remote host; define it there ({how}) or choose another "
            "network (--network network=NAME, bridge=NAME or user)"
        )
    try:
        with open(stock) as fh:
            xml = fh.read()
    except OSError as exc:
        raise HostError(
            f"network: '{name}' does not exist on {uri} and libvirt's stock definition {stock} "
            f"cannot be read ({exc.strerror}); install it (package libvirt-daemon-config-network) "
            "or choose another network (--network network=NAME for an isolated one, bridge=NAME "
            "or user)"
        ) from None
    from lxml import etree

    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as exc:
        raise HostError(f"network: {stock} is not well-formed XML ({exc})") from None
    if root.tag != "network" or root.findtext("name") != name:
        raise HostError(f"network: {stock} does not define a network named '{name}'")
    return xml, f"libvirt's stock definition {stock}"


def _define_step(connection, name: str, xml: str, what: str) -> Step:
    def do():
        import libvirt

        conn = connection.conn
        try:
            net = conn.networkDefineXML(xml)
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"network {name}: libvirt refused the definition: {_msg(exc)}") from None
        try:
            net.create()
        except libvirt.libvirtError as exc:
            start_error = _msg(exc)
            try:
                net.undefine()
            except libvirt.libvirtError:
                pass
            raise LibvirtError(f"network {name}: defined but libvirt could not start it "
                               f"({start_error}); its definition was removed again") from None
        record = {"kind": "network", "name": name, "uuid": net.UUIDString(), "defined": True,
                  "started": True, "autostart": False}
        try:
            net.setAutostart(1)
            record["autostart"] = True
        except libvirt.libvirtError:
            pass  # it runs now; only a host reboot would find it stopped
        return record

    return Step(f"define and start network {name} on {connection.uri} ({what})", do)


def _start_step(connection, name: str) -> Step:
    def do():
        import libvirt

        net = _lookup_network(connection.conn, name)
        if net is None:
            raise LibvirtError(f"network {name}: it disappeared from {connection.uri} before it could be started")
        if net.isActive():
            return None
        try:
            net.create()
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"network {name}: libvirt could not start it: {_msg(exc)}") from None
        return {"kind": "network-started", "name": name, "uuid": net.UUIDString()}

    return Step(f"start network {name} on {connection.uri}", do)


def _plan_network(ctx, name: str) -> list[Step]:
    import libvirt

    connection = ctx.connection
    conn = connection.conn
    net = _lookup_network(conn, name)
    if net is not None:
        try:
            active = net.isActive()
        except libvirt.libvirtError as exc:
            raise LibvirtError(f"network: cannot read the state of network '{name}': {_msg(exc)}") from None
        if active:
            ctx.note(f"network {name} on {connection.uri} exists and is active: unchanged")
            return []
        return [_start_step(connection, name)]
    xml, what = _definition(ctx, name)
    bridge = _bridge_of(xml)
    if bridge:
        user = _networks_by_bridge(conn).get(bridge)
        if user is not None and user != name:
            raise HostError(
                f"network {name}: its definition uses bridge '{bridge}', which network '{user}' "
                f"on {connection.uri} already uses; give one of them another bridge name "
                f"(virsh net-edit {user}) or use --network network={user}"
            )
    return [_define_step(connection, name, xml, what)]


def _plan_bridge(ctx, bridge: str) -> list[Step]:
    import libvirt
    from lxml import etree

    connection = ctx.connection
    uri = connection.uri
    if connection.is_test:
        ctx.note(f"network: bridge {bridge} not looked for: {uri} is libvirt's test driver")
        return []
    try:
        iface = connection.conn.interfaceLookupByName(bridge)
        kind = etree.fromstring(iface.XMLDesc(0).encode()).get("type")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
            raise HostError(
                f"network: bridge '{bridge}' does not exist on {uri}; create it there (for "
                f"example nmcli connection add type bridge ifname {bridge}, then enslave the "
                "uplink) or choose another network (--network network=default or user)"
            ) from None
        ctx.note(f"network: bridge {bridge} not looked for: {uri} cannot list host interfaces "
                 f"({_msg(exc)})")
        return []
    if kind and kind != "bridge":
        raise HostError(
            f"network: '{bridge}' on {uri} is an interface of type {kind}, not a bridge; give "
            "a bridge (bridge=NAME) or a libvirt network (network=NAME)"
        )
    owner = _networks_by_bridge(connection.conn).get(bridge)
    if owner:
        ctx.note(f"network: bridge {bridge} belongs to libvirt network '{owner}': "
                 f"--network network={owner} is the usual way to attach to it")
    else:
        ctx.note(f"network: bridge {bridge} exists on {uri}: unchanged")
    return []


def plan(ctx) -> list[Step]:
    net = ctx.settings.network
    if net.kind not in ("network", "bridge"):
        return []  # user-mode networking and none need nothing on the host
    if ctx.connection is None:
        ctx.note(f"network: no libvirt connection: {net.kind} '{net.source}' not checked")
        return []
    if net.kind == "bridge":
        return _plan_bridge(ctx, net.source)
    return _plan_network(ctx, net.source)


def _running_users(conn, name: str) -> list[str]:
    """Running guests with an interface on network *name*."""
    import libvirt
    from lxml import etree

    users = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            root = etree.fromstring(dom.XMLDesc(0).encode())
        except libvirt.libvirtError:
            continue  # gone meanwhile
        if any(src.get("network") == name
               for src in root.iterfind("devices/interface[@type='network']/source")):
            users.append(dom.name())
    return users


def undo(connection, record: dict) -> None:
    import libvirt

    check_record(record, {"kind": str, "name": str, "uuid": str, "defined?": bool}, "network")
    kind, name = record["kind"], record["name"]
    if kind not in ("network", "network-started"):
        raise UsageError(f"network: unknown record kind '{kind}'; not touched")
    conn = connection.conn
    # by the UUID libvirt gave the network vscen made or started: a network of that name made
    # by anyone else since is not the same one
    if not re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", record["uuid"]):
        raise UsageError(f"network {name}: the journal's uuid {record['uuid']!r} is not a UUID; not touched")
    net = _lookup_network(conn, name, record["uuid"])
    if net is None:
        return  # gone already
    if net.name() != name:
        raise VscenError(f"network: the network of UUID {record['uuid']} is '{net.name()}', not '{name}'; "
                         "not touched")
    try:
        if net.isActive():
            users = _running_users(conn, name)
            if users:
                raise HostError(
                    f"network {name} on {connection.uri} is in use by running guests "
                    f"{', '.join(sorted(users))}: not stopped; stop them and run vscen destroy again"
                )
            net.destroy()
        if kind == "network" and record.get("defined") and net.isPersistent():
            net.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return  # removed meanwhile
        raise LibvirtError(f"network {name}: cannot take it back: {_msg(exc)}") from None


NETWORK = HostAction(
    name="network",
    summary="the libvirt network the guest's interface uses: started, or defined and started",
    details=(
        "network=NAME: an active network is left alone; an inactive one is started (undo stops "
        "it); a missing one is defined, started and set to autostart (undo stops and undefines "
        "it): 'default' from libvirt's stock definition (local hosts; a remote one is told how), "
        "any other name isolated with no <ip> (no DHCP, no NAT). A bridge in use by another "
        "network is refused. bridge=NAME: the host interface must exist and be a bridge (where "
        "libvirt can list host interfaces). user, none: nothing."
    ),
    plan=plan,
    undo=undo,
)


VSCEN_STATIC = True  # registers the same objects wherever imported: imported only when used


@hookimpl
def vscen_register_host_actions(register):
    register(NETWORK)
