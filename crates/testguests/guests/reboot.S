# reboot: prints a marker and resets through the 0xcf9 reset register.
.include "lib64.inc"
.globl _start
_start:
    PUTS msg
    mov dx, 0xcf9
    mov al, 0x06
    out dx, al
    jmp halt
.section .rodata
msg: .asciz "REBOOT-CF9\n"
