# cpus: counts the enabled local APICs in the ACPI MADT (found through the
# RSDP in 0xe0000-0xfffff and the XSDT), starts the other CPUs with
# INIT/SIPI into a real-mode trampoline that increments a counter, and
# prints "CPUS=<madt count> ONLINE=<cpus that ran>", then powers off.
.include "lib64.inc"
.set TRAMPOLINE, 0x10000        # SIPI vector 0x10
.set COUNTER, 0x10800
.set ICR_LO, 0xfee00300
.set SVR, 0xfee000f0
.globl _start
_start:
    # Find "RSD PTR " on a 16-byte boundary.
    mov rbx, 0xe0000
    mov rax, 0x2052545020445352
1:  cmp [rbx], rax
    je 2f
    add rbx, 16
    cmp rbx, 0x100000
    jb 1b
    jmp fail
2:  cmp byte ptr [rbx + 15], 2       # revision 2+: XSDT
    jb fail
    mov rdi, [rbx + 24]
    mov ecx, [rdi + 4]
    lea r8, [rdi + 36]
    lea r9, [rdi + rcx]
3:  cmp r8, r9
    jae fail
    mov r10, [r8]
    cmp dword ptr [r10], 0x43495041   # "APIC"
    je 4f
    add r8, 8
    jmp 3b
4:  mov ecx, [r10 + 4]
    lea r11, [r10 + rcx]
    add r10, 44
    xor r12d, r12d
5:  cmp r10, r11
    jae 7f
    movzx eax, byte ptr [r10 + 1]
    test eax, eax
    jz 7f
    cmp byte ptr [r10], 0             # processor local APIC
    jne 6f
    test byte ptr [r10 + 4], 1        # enabled
    jz 6f
    inc r12d
6:  add r10, rax
    jmp 5b

7:  # Start the other CPUs.
    lea rsi, [rip + tramp]
    mov edi, TRAMPOLINE
    mov ecx, tramp_end - tramp
    rep movsb
    mov dword ptr [COUNTER], 1
    cmp r12d, 1
    jbe 9f
    mov rbx, SVR
    mov dword ptr [rbx], 0x1ff
    mov rbx, ICR_LO
    mov dword ptr [rbx], 0x000c4500   # INIT, all excluding self
    mov dword ptr [rbx], 0x000c4610   # SIPI, vector 0x10
    mov dword ptr [rbx], 0x000c4610
    mov ecx, 2000000
8:  cmp [COUNTER], r12d
    jae 9f
    pause
    dec ecx
    jnz 8b
9:  PUTS cpus_msg
    mov eax, r12d
    call putdec
    PUTS online_msg
    mov eax, [COUNTER]
    call putdec
    PUTS nl
    jmp poweroff
fail:
    PUTS fail_msg
    jmp poweroff

# Real-mode code each AP runs after SIPI: count itself, then halt.
.code16
tramp:
    cli
    mov ax, 0x1000
    mov ds, ax
    lock inc dword ptr [0x800]
1:  hlt
    jmp 1b
tramp_end:
.code64

.section .rodata
cpus_msg: .asciz "CPUS="
online_msg: .asciz " ONLINE="
nl: .asciz "\n"
fail_msg: .asciz "CPUS=? no MADT\n"
