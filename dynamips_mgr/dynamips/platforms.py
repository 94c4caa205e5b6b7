"""Router platforms as data: chassis, slots, built-in cards, adapters, WICs and defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    """A network module, port adapter, built-in motherboard or WIC."""

    name: str
    ports: int
    kind: str  # Ethernet, FastEthernet, GigabitEthernet, Serial, ATM, POS
    wic_slots: int = 0
    builtin: bool = False  # present on the motherboard: never sent to dynamips

    @property
    def link_type(self) -> str:
        """Default pcap data link type of this card's ports."""
        return {"Serial": "DLT_C_HDLC", "ATM": "DLT_ATM_RFC1483", "POS": "DLT_PPP_SERIAL"}.get(
            self.kind, "DLT_EN10MB"
        )


_CARDS = [
    Card("C7200-IO-FE", 1, "FastEthernet"),
    Card("C7200-IO-2FE", 2, "FastEthernet"),
    Card("C7200-IO-GE-E", 1, "GigabitEthernet"),
    Card("PA-FE-TX", 1, "FastEthernet"),
    Card("PA-2FE-TX", 2, "FastEthernet"),
    Card("PA-GE", 1, "GigabitEthernet"),
    Card("PA-4E", 4, "Ethernet"),
    Card("PA-8E", 8, "Ethernet"),
    Card("PA-4T+", 4, "Serial"),
    Card("PA-8T", 8, "Serial"),
    Card("PA-A1", 1, "ATM"),
    Card("PA-POS-OC3", 1, "POS"),
    Card("NM-1E", 1, "Ethernet"),
    Card("NM-4E", 4, "Ethernet"),
    Card("NM-1FE-TX", 1, "FastEthernet"),
    Card("NM-16ESW", 16, "FastEthernet"),
    Card("NM-4T", 4, "Serial"),
    Card("C1700-MB-1FE", 1, "FastEthernet", 2, True),
    Card("C1700-MB-WIC1", 0, "Serial", 2, True),
    Card("C2600-MB-1E", 1, "Ethernet", 3, True),
    Card("C2600-MB-2E", 2, "Ethernet", 3, True),
    Card("C2600-MB-1FE", 1, "FastEthernet", 3, True),
    Card("C2600-MB-2FE", 2, "FastEthernet", 3, True),
    Card("GT96100-FE", 2, "FastEthernet", 3, True),
    Card("Leopard-2FE", 2, "FastEthernet", 0, True),
]
ADAPTERS: dict[str, Card] = {card.name: card for card in _CARDS}
# WIC-1ENET has one port (the original modelled two; dynamips' driver handles one).
WICS: dict[str, Card] = {
    "WIC-1T": Card("WIC-1T", 1, "Serial"),
    "WIC-2T": Card("WIC-2T", 2, "Serial"),
    "WIC-1ENET": Card("WIC-1ENET", 1, "Ethernet"),
}
WIC_PORT_BASE = 16  # WIC sub-slot w holds slot-0 ports 16*(w+1)+k


@dataclass(frozen=True)
class Chassis:
    slots: int
    slot0: str | None  # built-in card, or None when slot 0 takes a module
    slot1: str | None = None  # c1751/c1760 placeholder
    # adapters that can be added/removed in slots 1+ while the router runs (OIR)
    hot_plug: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Platform:
    name: str
    defaults: dict
    chassis: dict[str, Chassis]
    default_chassis: str | None
    adapters: frozenset[str] = frozenset()  # what dynamips has a driver for in module slots
    wics: frozenset[str] = frozenset()  # WICs dynamips accepts in the slot-0 sub-slots


def _c2600_chassis() -> dict[str, Chassis]:
    board = {
        "2610": "1E",
        "2611": "2E",
        "2620": "1FE",
        "2621": "2FE",
        "2610XM": "1FE",
        "2611XM": "2FE",
        "2620XM": "1FE",
        "2621XM": "2FE",
        "2650XM": "1FE",
        "2651XM": "2FE",
    }
    return {name: Chassis(2, f"C2600-MB-{mb}") for name, mb in board.items()}


_COMMON = {
    "mmap": True,
    "idlepc": "",
    "idlemax": 500,
    "idlesleep": 30,
    "exec_area": 64,
    "auto_delete_disks": False,
    "system_id": "FTX0945W0MY",
    "disk1": 0,
}


def _defaults(ram, nvram, disk0, iomem, clock, sparse) -> dict:
    values = {
        **_COMMON,
        "ram": ram,
        "nvram": nvram,
        "disk0": disk0,
        "clock_divisor": clock,
        "sparsemem": sparse,
    }
    if iomem is not None:
        values["iomem"] = iomem
    return values


# Placement and OIR as the real dynamips 0.2.14 accepts them (measured: `vm slot_add_binding`
# per platform, `vm slot_oir_start` on a running router). OIR also answers OK on c3620/c3640,
# but those chassis have no OIR in hardware, so it is only offered on the c3660.
_PA = frozenset(n for n in ADAPTERS if n.startswith("PA-"))
_NM = frozenset(("NM-1E", "NM-4E", "NM-1FE-TX", "NM-16ESW", "NM-4T"))
_NM_GT = frozenset(("NM-1FE-TX", "NM-16ESW", "NM-4T"))  # c2691/c3725/c3745
_SERIAL_WICS = frozenset(("WIC-1T", "WIC-2T"))


def _gt96100(name: str, slots: int, nvram: int, hot_plug: frozenset[str] = frozenset()):
    """c2691/c3725/c3745: GT96100-FE on the motherboard, NMs in the other slots."""
    return Platform(
        name,
        _defaults(128, nvram, 16, 5, 8, True),
        {"": Chassis(slots, "GT96100-FE", hot_plug=hot_plug)},
        None,
        _NM_GT,
        _SERIAL_WICS,
    )


PLATFORMS: dict[str, Platform] = {
    "c1700": Platform(
        "c1700",
        _defaults(64, 32, 0, 15, 8, False),
        {
            "1720": Chassis(1, "C1700-MB-1FE"),
            "1721": Chassis(1, "C1700-MB-1FE"),
            "1750": Chassis(1, "C1700-MB-1FE"),
            "1751": Chassis(2, "C1700-MB-1FE", "C1700-MB-WIC1"),
            "1760": Chassis(2, "C1700-MB-1FE", "C1700-MB-WIC1"),
        },
        "1720",
        wics=_SERIAL_WICS | {"WIC-1ENET"},
    ),
    "c2600": Platform(
        "c2600",
        _defaults(64, 128, 0, 15, 8, False),
        _c2600_chassis(),
        "2610",
        _NM - {"NM-4T"},
        _SERIAL_WICS,
    ),
    "c2691": _gt96100("c2691", 2, 112),
    "c3600": Platform(
        "c3600",
        _defaults(128, 128, 0, 5, 4, True),
        {
            "3620": Chassis(2, None),
            "3640": Chassis(4, None),
            "3660": Chassis(7, "Leopard-2FE", hot_plug=_NM),
        },
        "3640",
        _NM,
    ),
    "c3725": _gt96100("c3725", 3, 112),
    "c3745": _gt96100("c3745", 5, 304, hot_plug=_NM_GT),
    "c7200": Platform(
        "c7200",
        {
            **_defaults(256, 128, 64, None, 4, True),
            "npe": "npe-400",
            "midplane": "vxr",
            "sensors": [22, 22, 22, 22],
            "power_supplies": [1, 1],
        },
        {"": Chassis(7, None, hot_plug=_PA)},
        None,
        _PA,
    ),
}

C7200_IO_CARDS = ("C7200-IO-FE", "C7200-IO-2FE", "C7200-IO-GE-E")
NPES = ("npe-100", "npe-150", "npe-175", "npe-200", "npe-225", "npe-300", "npe-400", "npe-g2")
# Keys a platform has beyond the common ones; anything else in a body is ignored for it.
PLATFORM_KEYS = {
    "c7200": ("npe", "midplane", "sensors", "power_supplies"),
    **{p: ("iomem", "chassis") for p in ("c1700", "c2600", "c3600")},
    **{p: ("iomem",) for p in ("c2691", "c3725", "c3745")},
}
