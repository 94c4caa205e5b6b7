"""Deterministic synthetic "IOS-like" ELF boot images for the real dynamips.

The image is a big-endian ELF32 executable (MIPS for c7200/c3600/c3725/c3745/c2691,
PowerPC for c2600/c1700) that disables interrupts, maps what it needs, prints a banner
and a prompt on the console UART, then spins in an idle loop of register-jump "hops"
that echoes typed characters.  The hops make ``vm get_idle_pc_prop`` propose usable
idle-PC values (see :func:`idle_pc_candidates`).

Everything is produced with :mod:`struct`: a tiny two-pass assembler per ISA encodes the
handful of instructions the program needs.
"""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BANNER",
    "ELF_MAGIC",
    "ENTRY_POINT",
    "HOP_COUNT",
    "HOSTNAME",
    "PLATFORMS",
    "PROMPT",
    "REFERENCE_SHA256",
    "ROM_OUTPUT",
    "boot_output",
    "build_image",
    "e_machine",
    "hop_addresses",
    "idle_pc_candidates",
    "isa",
    "recommended_idle_pc",
    "write_image",
]

PLATFORMS = ("c1700", "c2600", "c2691", "c3600", "c3725", "c3745", "c7200")

BANNER = "SYNTH-IOS READY"
HOSTNAME = "Router"
PROMPT = HOSTNAME + ">"

#: First 7 bytes GNS3 requires of an IOS image (ELF, 32-bit, big-endian, version 1).
ELF_MAGIC = b"\x7fELF\x01\x02\x01"
#: Virtual address of the image (KSEG0 on MIPS, DBAT0/IBAT3 on PowerPC) and entry point.
ENTRY_POINT = 0x80008000
#: What the dynamips ROM prints on the console before jumping to the image.
ROM_OUTPUT = "ROMMON emulation microcode.\n\nLaunching IOS image at 0x80008000...\n"
#: Number of idle-loop hops (hop 0 polls the UART, hops 1..19 only jump onwards).
HOP_COUNT = 20

#: SHA-256 of the images built with the default banner and hostname.
REFERENCE_SHA256 = {
    "c7200": "bf7555bb3469717dfb79bef3de1720d0fc9b9b67b901c7679bdf272c8097abae",
    "c3600": "4092e599c304ba19baf1c82c6d415c8d4059680ebb9591efedcdd55ad50a71fb",
    "c3725": "e56c3d0aa2f147257d396a3ab496f35c07a37ea3cdf52a85d9689b87d0ed1d0c",
    "c3745": "729b333add422fbf6b61db1ec4ca714758cfb8c246162f7c4ae0bb63f6c0baee",
    "c2691": "b28b89782ac5bea7c90c2a7e976319b04a3b44469049752c20bb9c4a965c8ab0",
    "c2600": "025d85e9c456a40c042d0e095a442bbb4fb927339925779afce6e1554c88d2b9",
    "c1700": "1b1eae8e8e07be09ba314d97184e2d6b94bfea50a8a2ff9cef7c78a45de84bb5",
}

_TEXT_OFFSET = 0x1000  # file offset of .text
_HOPS_OFFSET = 0x1000  # .text offset of hop 0
_HOP0_SIZE = 0x20
_HOP_SIZE = 0x10
_LINK_BASE = {"mips": 0x60008000, "ppc": 0x80008000}
_ELF_FLAGS = {"mips": 0x20000001, "ppc": 0}  # mips3 + noreorder, as real IOS images


@dataclass(frozen=True)
class _Platform:
    isa: str  # "mips" or "ppc"
    machine: int  # ELF e_machine
    uart: int  # address the image uses for the console UART
    status: int  # offset of the line status register
    data: int  # offset of the RX/TX data register
    tx_ready: int  # status bit: transmitter ready
    uart_tlb: bool = False  # MIPS: map the UART through TLB entry 1
    dbat2: tuple[int, int] | None = None  # PowerPC: (lower, upper) written to DBAT2


_PLATFORMS = {
    "c7200": _Platform("mips", 0x19, 0xBE840000, 0x40C, 0x41C, 0x04),
    "c3600": _Platform("mips", 0x1E, 0xBE840000, 0x28, 0x00, 0x20),
    "c3725": _Platform("mips", 0x61, 0x3C100000, 0x28, 0x00, 0x20, uart_tlb=True),
    "c3745": _Platform("mips", 0x69, 0x3C100000, 0x28, 0x00, 0x20, uart_tlb=True),
    "c2691": _Platform("mips", 0x66, 0x3C100000, 0x28, 0x00, 0x20, uart_tlb=True),
    "c2600": _Platform("ppc", 0x2B, 0xFFE00000, 0x05, 0x00, 0x20),
    "c1700": _Platform("ppc", 0x33, 0x68050000, 0x05, 0x00, 0x20, dbat2=(0x6000002A, 0x60001FFE)),
}
_RX_READY = 0x01

# An instruction is a tuple (mnemonic, *operands); a bare string is a label.  Operands
# starting with "$" are registers, other strings are labels, ints are immediates.
Insn = tuple[object, ...]
Item = str | Insn


def _platform(platform: str) -> _Platform:
    try:
        return _PLATFORMS[platform]
    except KeyError:
        raise ValueError(f"unknown platform {platform!r}; expected one of {PLATFORMS}") from None


def isa(platform: str) -> str:
    """Return ``"mips"`` or ``"ppc"``: the instruction set of the platform's image."""
    return _platform(platform).isa


def e_machine(platform: str) -> int:
    """Return the ELF ``e_machine`` value written for *platform*."""
    return _platform(platform).machine


def hop_addresses(platform: str) -> list[int]:
    """Return the guest addresses of the idle-loop hops 0..19 (as dynamips reports PCs)."""
    base = _LINK_BASE[isa(platform)] + _HOPS_OFFSET
    return [base] + [base + _HOP0_SIZE + _HOP_SIZE * i for i in range(HOP_COUNT - 1)]


def idle_pc_candidates(platform: str) -> list[int]:
    """Return the hops 1..19: the addresses ``vm get_idle_pc_prop`` may propose.

    Hop 0 (the UART poll) is sampled far more than 80 times and is never proposed, but it
    still works as an idle-PC if set by hand.
    """
    return hop_addresses(platform)[1:]


def recommended_idle_pc(platform: str) -> int:
    """Return hop 2 (0x60009030 on MIPS, 0x80009030 on PowerPC), proposed in every run."""
    return hop_addresses(platform)[2]


def boot_output(banner: str = BANNER, hostname: str = HOSTNAME) -> str:
    """Return what the console shows from the ROM's first line up to the first prompt."""
    return f"{ROM_OUTPUT}\r\n\r\n{banner}\r\n\r\n{hostname}>"


# --------------------------------------------------------------------------- MIPS

_MIPS_REGS = {
    "zero": 0,
    "at": 1,
    "v0": 2,
    "v1": 3,
    "a0": 4,
    "a1": 5,
    "a2": 6,
    "a3": 7,
    **{f"t{i}": 8 + i for i in range(8)},
    **{f"s{i}": 16 + i for i in range(8)},
    "t8": 24,
    "t9": 25,
    "k0": 26,
    "k1": 27,
    "gp": 28,
    "sp": 29,
    "fp": 30,
    "ra": 31,
}
_MIPS_IMM = {"addiu": 0x09, "andi": 0x0C, "ori": 0x0D, "xori": 0x0E}  # op rt, rs, imm
_MIPS_MEM = {"lbu": 0x24, "sb": 0x28}  # op rt, offset(base)
_MIPS_BRANCH = {"beq": 0x04, "bne": 0x05}  # op rs, rt, target
_MIPS_FIXED = {"nop": 0x00000000, "tlbwi": 0x42000002}
_CP0 = {
    "index": 0,
    "entrylo0": 2,
    "entrylo1": 3,
    "pagemask": 5,
    "wired": 6,
    "entryhi": 10,
    "status": 12,
    "cause": 13,
}


def _mips_i(op: int, rs: int, rt: int, imm: int) -> int:
    return op << 26 | rs << 21 | rt << 16 | (imm & 0xFFFF)


def _mips_encode(op: str, args: Sequence[int], pc: int) -> list[int]:
    """Encode one MIPS instruction (or the ``li`` lui+ori pair) located at *pc*."""
    if op in _MIPS_FIXED:
        return [_MIPS_FIXED[op]]
    if op == "li":
        rt, value = args
        return [_mips_i(0x0F, 0, rt, value >> 16), _mips_i(0x0D, rt, rt, value)]
    if op in _MIPS_IMM:
        rt, rs, imm = args
        return [_mips_i(_MIPS_IMM[op], rs, rt, imm)]
    if op in _MIPS_MEM:
        rt, offset, base = args
        return [_mips_i(_MIPS_MEM[op], base, rt, offset)]
    if op in _MIPS_BRANCH:
        rs, rt, target = args
        delta = (target - (pc + 4)) >> 2
        assert -0x8000 <= delta < 0x8000, "branch out of range"
        return [_mips_i(_MIPS_BRANCH[op], rs, rt, delta)]
    if op == "addu":
        rd, rs, rt = args
        return [rs << 21 | rt << 16 | rd << 11 | 0x21]
    if op == "jr":
        return [args[0] << 21 | 0x08]
    if op == "jal":
        (target,) = args
        assert target >> 28 == (pc + 4) >> 28, "jal target outside the 256 MB region"
        return [0x0C000000 | (target >> 2) & 0x03FFFFFF]
    if op == "mtc0":
        rt, rd = args
        return [0x40800000 | rt << 16 | rd << 11]
    raise ValueError(f"unknown MIPS instruction {op!r}")


def _mips_program(p: _Platform) -> list[Item]:
    """Return the MIPS program (entry, putc, puts, main, rx handler, hops)."""

    def mtc0(reg: str, value: int | str) -> list[Item]:
        if value == 0 and reg in ("cause", "wired"):
            return [("mtc0", "$zero", _CP0[reg])]
        return [("li", "$t0", value), ("mtc0", "$t0", _CP0[reg])]

    def tlb_entry(index: int, pagemask: int, hi: int, lo0: int, lo1: int) -> list[Item]:
        values = {
            "index": index,
            "pagemask": pagemask,
            "entryhi": hi,
            "entrylo0": lo0,
            "entrylo1": lo1,
        }
        body = [insn for reg, value in values.items() for insn in mtc0(reg, value)]
        return [*body, ("nop",), ("tlbwi",), ("nop",)]

    def call(label: str) -> list[Item]:
        return [("jal", label), ("nop",)]

    def jump(label: str) -> list[Item]:  # leaves the page / KSEG0 through the dispatcher
        return [("li", "$t9", label), ("jr", "$t9"), ("nop",)]

    def entrylo(phys: int, cache: int, dirty: int, valid: int) -> int:
        return (phys >> 12) << 6 | cache << 3 | dirty << 2 | valid << 1 | 1  # always global

    tlb = tlb_entry(0, 0x01FFE000, 0x60000000, entrylo(0, 3, 1, 1), entrylo(0x01000000, 3, 1, 1))
    if p.uart_tlb:
        tlb += tlb_entry(1, 0, p.uart, entrylo(p.uart, 2, 1, 1), entrylo(0, 0, 0, 0))
    return [
        # Entry, executed in KSEG0 at 0x80008000: only absolute constants until `jr t9`.
        *mtc0("status", 0x00400000),
        ("nop",),  # BEV=1, IE=0: interrupts off first
        *mtc0("cause", 0),
        *mtc0("wired", 0),
        *tlb,
        *mtc0("wired", 2 if p.uart_tlb else 1),
        ("li", "$sp", 0x60007F00),
        *jump("main"),
        "putc",  # a0 = character
        ("li", "$t0", p.uart),
        "putc_wait",
        ("lbu", "$t1", p.status, "$t0"),
        ("andi", "$t1", "$t1", p.tx_ready),
        ("beq", "$t1", "$zero", "putc_wait"),
        ("nop",),
        ("sb", "$a0", p.data, "$t0"),
        ("jr", "$ra"),
        ("nop",),
        "puts",  # a0 = NUL-terminated string
        ("addu", "$s7", "$ra", "$zero"),
        ("addu", "$s6", "$a0", "$zero"),
        "puts_loop",
        ("lbu", "$a0", 0, "$s6"),
        ("beq", "$a0", "$zero", "puts_done"),
        ("nop",),
        *call("putc"),
        ("addiu", "$s6", "$s6", 1),
        ("beq", "$zero", "$zero", "puts_loop"),
        ("nop",),
        "puts_done",
        ("jr", "$s7"),
        ("nop",),
        "main",
        ("li", "$a0", "banner"),
        *call("puts"),
        ("li", "$a0", "prompt"),
        *call("puts"),
        ("li", "$s0", p.uart),
        *jump("hop0"),
        "rx",  # entered from hop 0 when a byte is waiting
        ("lbu", "$a0", p.data, "$s0"),
        ("xori", "$t2", "$a0", 0x0D),
        ("beq", "$t2", "$zero", "rx_cr"),
        ("nop",),
        ("xori", "$t2", "$a0", 0x0A),
        ("beq", "$t2", "$zero", "rx_done"),
        ("nop",),
        *call("putc"),
        ("beq", "$zero", "$zero", "rx_done"),
        ("nop",),
        "rx_cr",
        ("li", "$a0", "cr_prompt"),
        *call("puts"),
        "rx_done",
        *jump("hop1"),
        ("org", _HOPS_OFFSET),
        "hop0",
        ("lbu", "$t1", p.status, "$s0"),
        ("andi", "$t1", "$t1", _RX_READY),
        ("bne", "$t1", "$zero", "rx"),
        ("nop",),
        *jump("hop1"),
        *_hops(jump),
    ]


# ------------------------------------------------------------------------ PowerPC

_PPC_D = {"addi": 14, "addis": 15}  # op rD, rA, imm
_PPC_MEM = {"lbz": 34, "stb": 38}  # op rD, offset(rA)
_PPC_LOGIC = {"ori": 24, "andi.": 28}  # op rA, rS, imm
_PPC_X = {"and": 28, "or": 444}  # op rA, rS, rB
_PPC_SPR = {"lr": 8, "ctr": 9, "dbat2u": 540, "dbat2l": 541}
_PPC_BC = {"beq": 12, "bne": 4}  # BO; BI is 2 (CR0[EQ])
_PPC_FIXED = {"blr": 0x4E800020, "isync": 0x4C00012C, "nop": 0x60000000}


def _ppc_spr(xo: int, reg: int, spr: int) -> int:
    return 31 << 26 | reg << 21 | (spr & 0x1F) << 16 | (spr >> 5) << 11 | xo << 1


def _ppc_encode(op: str, args: Sequence[int], pc: int) -> list[int]:
    """Encode one PowerPC instruction (or the ``li`` lis+ori pair) located at *pc*."""
    if op in _PPC_FIXED:
        return [_PPC_FIXED[op]]
    if op == "li":
        rd, value = args
        return [15 << 26 | rd << 21 | value >> 16, 24 << 26 | rd << 21 | rd << 16 | value & 0xFFFF]
    if op in _PPC_D:
        rd, ra, imm = args
        return [_PPC_D[op] << 26 | rd << 21 | ra << 16 | imm & 0xFFFF]
    if op in _PPC_MEM:
        rd, offset, ra = args
        return [_PPC_MEM[op] << 26 | rd << 21 | ra << 16 | offset & 0xFFFF]
    if op in _PPC_LOGIC:
        ra, rs, imm = args
        return [_PPC_LOGIC[op] << 26 | rs << 21 | ra << 16 | imm & 0xFFFF]
    if op in _PPC_X:
        ra, rs, rb = args
        return [31 << 26 | rs << 21 | ra << 16 | rb << 11 | _PPC_X[op] << 1]
    if op == "mr":
        ra, rs = args
        return _ppc_encode("or", (ra, rs, rs), pc)
    if op == "cmpwi":
        ra, imm = args
        return [11 << 26 | ra << 16 | imm & 0xFFFF]
    if op in ("mfmsr", "mtmsr"):
        return [31 << 26 | args[0] << 21 | (83 if op == "mfmsr" else 146) << 1]
    if op in ("mfspr", "mtspr"):  # mfspr rD, spr / mtspr spr, rS
        reg, spr = (args[0], args[1]) if op == "mfspr" else (args[1], args[0])
        return [_ppc_spr(339 if op == "mfspr" else 467, reg, spr)]
    if op in ("b", "bl"):
        delta = args[0] - pc
        assert -0x02000000 <= delta < 0x02000000, "branch out of range"
        return [18 << 26 | delta & 0x03FFFFFC | (op == "bl")]
    if op in _PPC_BC:
        delta = args[0] - pc
        assert -0x8000 <= delta < 0x8000, "branch out of range"
        return [16 << 26 | _PPC_BC[op] << 21 | 2 << 16 | delta & 0xFFFC]
    raise ValueError(f"unknown PowerPC instruction {op!r}")


def _ppc_program(p: _Platform) -> list[Item]:
    """Return the PowerPC program (entry+main, putc, puts, rx handler, hops)."""

    def jump(label: str) -> list[Item]:  # register jump through LR: back to the dispatcher
        return [("li", "$r12", label), ("mtspr", _PPC_SPR["lr"], "$r12"), ("blr",)]

    dbat: list[Item] = []
    if p.dbat2 is not None:  # lower half first: the BAT becomes valid only when complete
        lower, upper = p.dbat2
        dbat = [
            ("li", "$r3", lower),
            ("mtspr", _PPC_SPR["dbat2l"], "$r3"),
            ("li", "$r3", upper),
            ("mtspr", _PPC_SPR["dbat2u"], "$r3"),
            ("isync",),
        ]
    return [
        ("mfmsr", "$r3"),
        ("li", "$r4", 0xFFFF7FFF),
        ("and", "$r3", "$r3", "$r4"),
        ("mtmsr", "$r3"),
        ("isync",),  # clear MSR[EE]
        *dbat,
        ("li", "$r20", p.uart),
        ("li", "$r3", "banner"),
        ("bl", "puts"),
        ("li", "$r3", "prompt"),
        ("bl", "puts"),
        *jump("hop0"),
        "putc",  # r3 = character
        ("lbz", "$r5", p.status, "$r20"),
        ("andi.", "$r5", "$r5", p.tx_ready),
        ("beq", "putc"),
        ("stb", "$r3", p.data, "$r20"),
        ("blr",),
        "puts",  # r3 = NUL-terminated string
        ("mfspr", "$r16", _PPC_SPR["lr"]),
        ("mr", "$r17", "$r3"),
        "puts_loop",
        ("lbz", "$r3", 0, "$r17"),
        ("cmpwi", "$r3", 0),
        ("beq", "puts_done"),
        ("bl", "putc"),
        ("addi", "$r17", "$r17", 1),
        ("b", "puts_loop"),
        "puts_done",
        ("mtspr", _PPC_SPR["lr"], "$r16"),
        ("blr",),
        "rx",  # entered from hop 0 when a byte is waiting
        ("lbz", "$r3", p.data, "$r20"),
        ("cmpwi", "$r3", 0x0D),
        ("beq", "rx_cr"),
        ("cmpwi", "$r3", 0x0A),
        ("beq", "rx_done"),
        ("bl", "putc"),
        ("b", "rx_done"),
        "rx_cr",
        ("li", "$r3", "cr_prompt"),
        ("bl", "puts"),
        "rx_done",
        *jump("hop1"),
        ("org", _HOPS_OFFSET),
        "hop0",
        ("lbz", "$r5", p.status, "$r20"),
        ("andi.", "$r5", "$r5", _RX_READY),
        ("bne", "rx"),
        ("nop",),  # nop keeps hop 0 at 32 bytes, as on MIPS
        *jump("hop1"),
        *_hops(jump),
    ]


# ----------------------------------------------------------------------- common


def _hops(jump: Callable[[str], list[Item]]) -> list[Item]:
    """Hops 1..19: each only jumps to the next one; the last goes back to hop 0."""
    items: list[Item] = []
    for i in range(1, HOP_COUNT):
        items += [f"hop{i}", *jump(f"hop{(i + 1) % HOP_COUNT}")]
    return items


def _strings(banner: str, hostname: str) -> list[Item]:
    return [
        "banner",
        ("asciz", f"\r\n\r\n{banner}\r\n\r\n"),
        "prompt",
        ("asciz", f"{hostname}>"),
        "cr_prompt",
        ("asciz", f"\r\n{hostname}>"),
        ("align", 16),
    ]


_ENCODERS: dict[str, Callable[[str, Sequence[int], int], list[int]]] = {
    "mips": _mips_encode,
    "ppc": _ppc_encode,
}
_REGISTERS: dict[str, Callable[[str], int]] = {
    "mips": lambda name: _MIPS_REGS[name],
    "ppc": lambda name: int(name.removeprefix("r")),
}


def _size(item: Insn, offset: int) -> int:
    op = item[0]
    if op == "org":
        assert offset <= item[1], "code overlaps the hop area"
        return item[1] - offset
    if op == "align":
        return -offset % item[1]
    if op == "asciz":
        return len(item[1].encode("latin-1")) + 1
    return 8 if op == "li" else 4


def _assemble(items: Sequence[Item], isa_name: str, base: int) -> bytes:
    """Two-pass assembly of *items* linked at *base*; returns the raw big-endian bytes."""
    labels: dict[str, int] = {}
    offset = 0
    for item in items:
        if isinstance(item, str):
            assert item not in labels, f"duplicate label {item}"
            labels[item] = base + offset
        else:
            offset += _size(item, offset)

    encode, register = _ENCODERS[isa_name], _REGISTERS[isa_name]

    def operand(arg: object) -> int:
        if isinstance(arg, str):
            return register(arg[1:]) if arg.startswith("$") else labels[arg]
        assert isinstance(arg, int)
        return arg

    out = bytearray()
    for item in items:
        if isinstance(item, str):
            continue
        op = item[0]
        if op == "asciz":
            out += item[1].encode("latin-1") + b"\0"
        elif op in ("org", "align"):
            out += bytes(_size(item, len(out)))
        else:
            words = encode(op, [operand(a) for a in item[1:]], base + len(out))
            out += struct.pack(f">{len(words)}I", *words)
    return bytes(out)


def _elf(text: bytes, machine: int, flags: int) -> bytes:
    """Wrap *text* in an ELF32 big-endian executable with .text and .shstrtab sections."""
    shstrtab = b"\0.text\0.shstrtab\0"
    strtab_off = _TEXT_OFFSET + len(text)
    shoff = (strtab_off + len(shstrtab) + 3) & ~3
    ident = ELF_MAGIC + bytes(9)
    header = struct.pack(
        ">16sHHIIIIIHHHHHH",
        ident,
        2,
        machine,
        1,
        ENTRY_POINT,
        52,
        shoff,
        flags,
        52,
        32,
        1,
        40,
        3,
        2,
    )
    phdr = struct.pack(
        ">8I", 1, _TEXT_OFFSET, ENTRY_POINT, ENTRY_POINT, len(text), len(text), 7, 0x1000
    )
    sections = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (1, 1, 6, ENTRY_POINT, _TEXT_OFFSET, len(text), 0, 0, 16, 0),
        (7, 3, 0, 0, strtab_off, len(shstrtab), 0, 0, 1, 0),
    ]
    out = bytearray(header + phdr)
    out += bytes(_TEXT_OFFSET - len(out)) + text + shstrtab
    out += bytes(shoff - len(out))
    for section in sections:
        out += struct.pack(">10I", *section)
    return bytes(out)


def build_image(platform: str, *, banner: str = BANNER, hostname: str = HOSTNAME) -> bytes:
    """Return the ELF image bytes for *platform* (deterministic; latin-1 strings)."""
    p = _platform(platform)
    program = _mips_program(p) if p.isa == "mips" else _ppc_program(p)
    text = _assemble(program + _strings(banner, hostname), p.isa, _LINK_BASE[p.isa])
    return _elf(text, p.machine, _ELF_FLAGS[p.isa])


def write_image(
    path: str | os.PathLike[str],
    platform: str,
    *,
    banner: str = BANNER,
    hostname: str = HOSTNAME,
) -> pathlib.Path:
    """Write the image for *platform* to *path* and return it as a :class:`pathlib.Path`."""
    path = pathlib.Path(path)
    path.write_bytes(build_image(platform, banner=banner, hostname=hostname))
    return path
