//! Tiny 64-bit guests of our own, as ELF executables the vm process loads
//! at 1 MiB and enters in long mode.

/// Where the guests are loaded and entered.
const LOAD: u64 = 0x10_0000;

/// Prints "tiny guest up" on COM1, then echoes every byte it receives
/// there (polling the line status register).
pub fn echo_guest() -> Vec<u8> {
    #[rustfmt::skip]
    let mut code: Vec<u8> = vec![
        0xba, 0xf8, 0x03, 0x00, 0x00,             // mov edx, 0x3f8
        0x48, 0x8d, 0x35, 0x1c, 0x00, 0x00, 0x00, // lea rsi, [rip + msg]
        0xb9, 0x0f, 0x00, 0x00, 0x00,             // mov ecx, 15
        0xac,                                     // print: lodsb
        0xee,                                     // out dx, al
        0xe2, 0xfc,                               // loop print
        0xba, 0xfd, 0x03, 0x00, 0x00,             // echo: mov edx, 0x3fd (LSR)
        0xec,                                     // wait: in al, dx
        0xa8, 0x01,                               // test al, 1 (data ready)
        0x74, 0xfb,                               // jz wait
        0xba, 0xf8, 0x03, 0x00, 0x00,             // mov edx, 0x3f8
        0xec,                                     // in al, dx
        0xee,                                     // out dx, al
        0xeb, 0xed,                               // jmp echo
    ];
    code.extend_from_slice(b"tiny guest up\r\n");
    elf(&code)
}

/// Prints "tiny guest up" on COM1, then halts for good (no CPU used).
pub fn halt_guest() -> Vec<u8> {
    #[rustfmt::skip]
    let mut code: Vec<u8> = vec![
        0xba, 0xf8, 0x03, 0x00, 0x00,             // mov edx, 0x3f8
        0x48, 0x8d, 0x35, 0x0d, 0x00, 0x00, 0x00, // lea rsi, [rip + msg]
        0xb9, 0x0f, 0x00, 0x00, 0x00,             // mov ecx, 15
        0xac,                                     // print: lodsb
        0xee,                                     // out dx, al
        0xe2, 0xfc,                               // loop print
        0xfa,                                     // cli
        0xf4,                                     // halt: hlt
        0xeb, 0xfd,                               // jmp halt
    ];
    code.extend_from_slice(b"tiny guest up\r\n");
    elf(&code)
}

/// An ELF64 x86-64 executable with `code` as its one loadable segment.
fn elf(code: &[u8]) -> Vec<u8> {
    let code_off: u64 = 64 + 56;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 64-bit LE v1
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&LOAD.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let len = code.len() as u64;
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&code_off.to_le_bytes());
    elf.extend_from_slice(&LOAD.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&len.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&len.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&16u64.to_le_bytes()); // p_align
    elf.extend_from_slice(code);
    elf
}
