# echo: prints a marker, then echoes every byte received on COM1 (polling
# the line status register) until it receives 'q', then powers off.
.include "lib64.inc"
.globl _start
_start:
    PUTS ready
1:  mov dx, COM1 + 5
2:  in al, dx
    test al, 1                  # data ready
    jnz 3f
    pause
    jmp 2b
3:  mov dx, COM1
    in al, dx
    out dx, al
    cmp al, 'q'
    jne 1b
    PUTS nl
    jmp poweroff
.section .rodata
ready: .asciz "ECHO-READY\n"
nl: .asciz "\n"
