# mem: reads the E820 map from the zero page and prints the usable RAM and
# the top of RAM in KiB ("E820-RAM-KB=<n> TOP-KB=<n>"), then powers off.
.include "lib64.inc"
.globl _start
_start:
    mov rbx, rsi                        # zero page
    movzx ecx, byte ptr [rbx + 0x1e8]   # e820_entries
    lea r8, [rbx + 0x2d0]               # e820_table, 20-byte entries
    xor r9, r9                          # usable bytes
    xor r10, r10                        # top of RAM
1:  test ecx, ecx
    jz 3f
    cmp dword ptr [r8 + 16], 1          # E820_RAM
    jne 2f
    mov rax, [r8 + 8]
    add r9, rax
    add rax, [r8]
    cmp rax, r10
    jbe 2f
    mov r10, rax
2:  add r8, 20
    dec ecx
    jmp 1b
3:  PUTS ram_msg
    mov rax, r9
    shr rax, 10
    call putdec
    PUTS top_msg
    mov rax, r10
    shr rax, 10
    call putdec
    PUTS nl
    jmp poweroff
.section .rodata
ram_msg: .asciz "E820-RAM-KB="
top_msg: .asciz " TOP-KB="
nl: .asciz "\n"
