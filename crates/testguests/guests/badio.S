# badio: pokes unclaimed ports, odd access sizes, string I/O, MMIO in the
# hole and above RAM, odd CMOS indices and PM register widths, then prints
# a marker and powers off: the VM (and the host) must survive all of it.
.include "lib64.inc"
.globl _start
_start:
    mov dx, 0x1234
    in al, dx
    out dx, al
    in eax, dx
    out dx, eax
    mov dx, 0xfffe
    in eax, dx
    out dx, eax
    mov dx, 0xcf8
    in eax, dx
    mov eax, 0x80000000
    out dx, eax
    # String I/O: 200 bytes in from an unclaimed port, out to the POST port.
    mov dx, 0x2345
    lea rdi, [rip + buf]
    mov ecx, 200
    rep insb
    mov dx, 0x80
    lea rsi, [rip + buf]
    mov ecx, 200
    rep outsb
    mov dx, 0x3f9
    lea rsi, [rip + buf]
    mov ecx, 8
    rep outsd
    # CMOS: index 0xff, 0x7f and NMI-disable | 0.
    mov al, 0xff
    out 0x70, al
    in al, 0x71
    out 0x71, al
    mov al, 0x7f
    out 0x70, al
    in al, 0x71
    mov al, 0x80
    out 0x70, al
    in al, 0x71
    in ax, 0x70
    in eax, 0x70
    # PM block: odd widths and offsets (never SLP_EN).
    mov dx, 0x601
    in eax, dx
    mov dx, 0x606
    in eax, dx
    mov dx, 0x608
    out dx, eax
    mov dx, 0x60b
    in ax, dx
    # 0xcf9 without the reset bits.
    mov dx, 0xcf9
    mov al, 0x02
    out dx, al
    in al, dx
    # i8042 status and a harmless command.
    in al, 0x64
    mov al, 0xaa
    out 0x64, al
    in al, 0x60
    # MMIO in the PCI hole and above the end of RAM (mapped by our 4 GiB identity map).
    mov rbx, 0xd0000000
    mov eax, [rbx]
    mov [rbx], eax
    mov rax, [rbx + 8]
    mov [rbx + 8], rax
    mov byte ptr [rbx + 3], 0x5a
    mov rbx, 0xbff00000
    mov eax, [rbx]
    mov [rbx], eax
    # The dword writes above set DLAB and loopback on COM1: undo that.
    mov dx, 0x3fb
    mov al, 0x03
    out dx, al
    mov dx, 0x3fc
    out dx, al
    PUTS msg
    jmp poweroff
.section .rodata
msg: .asciz "BADIO-SURVIVED\n"
.data
buf: .space 256
