# int3: prints a marker and executes int3 in kernel mode (an emulation
# failure on kvm_pvm; on other hosts it faults with no IDT: a triple fault).
.include "lib64.inc"
.globl _start
_start:
    PUTS msg
    int3
    jmp halt
.section .rodata
msg: .asciz "INT3\n"
