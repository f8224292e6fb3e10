# idle-ioapic: like idle, but takes the SCI the way Linux does: through the
# IOAPIC (pin 9, level-triggered, active high, as the MADT's override says)
# and the local APIC, with both 8259s masked. Prints IOAPIC-READY, waits
# with sti; hlt, and on the power button prints POWER-BUTTON and powers off.
.include "lib64.inc"
.set PM1_STS, 0x600
.set PM1_EN, 0x602
.set PWRBTN, 0x100
.set SCI_VECTOR, 0x39
.set NVEC, 0x40
.set IOAPIC, 0xfec00000
.set LAPIC, 0xfee00000
.globl _start
_start:
    lea rdi, [rip + idt]
    lea rax, [rip + ignore]
    mov ecx, NVEC
1:  call gate
    add rdi, 16
    dec ecx
    jnz 1b
    lea rdi, [rip + idt + SCI_VECTOR * 16]
    lea rax, [rip + sci]
    call gate
    lidt [rip + idtr]
    # Mask both PICs.
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    # Local APIC: software enable, spurious vector 0x3f.
    mov rbx, LAPIC
    mov dword ptr [rbx + 0xf0], 0x13f
    # IOAPIC redirection entry 9 (registers 0x22/0x23): vector, level
    # (bit 15), active high (bit 13 clear), unmasked, to APIC id 0.
    mov rbx, IOAPIC
    mov dword ptr [rbx], 0x23
    mov dword ptr [rbx + 0x10], 0
    mov dword ptr [rbx], 0x22
    mov dword ptr [rbx + 0x10], 0x8000 | SCI_VECTOR
    mov dx, PM1_EN
    mov ax, PWRBTN
    out dx, ax
    PUTS ready
2:  sti
    hlt
    jmp 2b

gate:
    mov [rdi], ax
    mov word ptr [rdi + 2], 0x08
    mov word ptr [rdi + 4], 0x8e00
    mov rdx, rax
    shr rdx, 16
    mov [rdi + 6], dx
    shr rdx, 16
    mov [rdi + 8], edx
    mov dword ptr [rdi + 12], 0
    ret

ignore:
    iretq

sci:
    mov dx, PM1_STS
    in ax, dx
    test ax, PWRBTN
    jz 1f
    mov ax, PWRBTN
    out dx, ax
    PUTS pressed
    jmp poweroff
1:  mov rbx, LAPIC
    mov dword ptr [rbx + 0xb0], 0           # EOI
    iretq

.section .rodata
ready: .asciz "IOAPIC-READY\n"
pressed: .asciz "POWER-BUTTON\n"
.balign 8
idtr: .word NVEC * 16 - 1
      .quad idt
.data
.balign 16
idt: .space NVEC * 16
