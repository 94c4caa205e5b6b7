async def test_create_router_and_switch(api):
    pid = await api.project()
    r = await api.router(pid)
    sw = await api.device(pid)
    print(r, sw)
    p1 = await api.udp_port(pid)
    p2 = await api.udp_port(pid)
    reply = await api.post(
        f"/projects/{pid}/dynamips/vms/{r['vm_id']}/adapters/0/ports/0/nio",
        {"type": "nio_udp", "lport": p1, "rhost": "127.0.0.1", "rport": p2},
    )
    assert reply.status == 201, reply.body
    reply = await api.post(
        f"/projects/{pid}/dynamips/devices/{sw['device_id']}/ports/1/nio",
        {
            "nio": {"type": "nio_udp", "lport": p2, "rhost": "127.0.0.1", "rport": p1},
            "port_settings": {"type": "access", "vlan": 1},
        },
    )
    assert reply.status == 201, reply.body
    from tests.conftest import hypervisor_port

    print(api.fake.commands(hypervisor_port(api, r["vm_id"])))
    print(api.fake.commands(hypervisor_port(api, sw["device_id"])))
    reply = await api.post(f"/projects/{pid}/close")
    assert reply.status == 204, reply.body
