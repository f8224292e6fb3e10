# ticker: prints a marker, then '.' on COM1 forever (for pause/resume).
.include "lib64.inc"
.globl _start
_start:
    PUTS ready
    mov dx, COM1
    mov al, '.'
1:  out dx, al
    jmp 1b
.section .rodata
ready: .asciz "TICK-READY\n"
