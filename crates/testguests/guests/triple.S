# triple: prints a marker, loads an empty IDT and raises #UD: the fault,
# the double fault and the triple fault cannot be delivered.
.include "lib64.inc"
.globl _start
_start:
    PUTS msg
    lidt [rip + noidt]
    ud2
    jmp halt
.section .rodata
msg: .asciz "TRIPLE\n"
.balign 8
noidt: .word 0
       .quad 0
