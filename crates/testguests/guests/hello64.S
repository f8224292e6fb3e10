# hello64: entered in 64-bit mode (no PVH note) with rsi = zero page;
# checks the zero page's "HdrS" magic, prints a marker, powers off.
.include "lib64.inc"
.globl _start
_start:
    cmp dword ptr [rsi + 0x202], 0x53726448
    jne halt
    PUTS msg
    jmp poweroff
.section .rodata
msg: .asciz "HELLO-64\n"
