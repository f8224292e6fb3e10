# reboot-kbd: prints a marker and resets by pulsing the i8042 reset line.
.include "lib64.inc"
.globl _start
_start:
    PUTS msg
    mov al, 0xfe
    out 0x64, al
    jmp halt
.section .rodata
msg: .asciz "REBOOT-KBD\n"
