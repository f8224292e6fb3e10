# idle: waits for the ACPI power button without burning host CPU: sets up
# an IDT, the 8259 PICs with only IRQ 9 (the SCI) unmasked, enables
# PWRBTN_EN, prints a marker and halts with interrupts on. The SCI handler
# checks PWRBTN_STS, acknowledges it, prints a marker and powers off.
.include "lib64.inc"
.set PM1_STS, 0x600
.set PM1_EN, 0x602
.set PWRBTN, 0x100
.set SCI_VECTOR, 0x29            # slave PIC base 0x28 + IRQ 9 - 8
.set NVEC, 0x30
.globl _start
_start:
    # IDT: every vector to `ignore`, the SCI vector to `sci`.
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
    # PICs: ICW1..4, vectors 0x20/0x28, then mask all but cascade and IRQ 9.
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
    mov al, 0xfb
    out 0x21, al
    mov al, 0xfd
    out 0xa1, al
    # Listen for the power button.
    mov dx, PM1_EN
    mov ax, PWRBTN
    out dx, ax
    PUTS ready
2:  sti
    hlt
    jmp 2b

# Writes a 64-bit interrupt gate for handler rax at rdi.
gate:
    mov [rdi], ax
    mov word ptr [rdi + 2], 0x08         # code64 selector
    mov word ptr [rdi + 4], 0x8e00       # present, DPL 0, interrupt gate
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
    out dx, ax                           # write 1 to clear
    PUTS pressed
    jmp poweroff
1:  mov al, 0x20
    out 0xa0, al
    out 0x20, al
    iretq

.section .rodata
ready: .asciz "IDLE-READY\n"
pressed: .asciz "POWER-BUTTON\n"
.balign 8
idtr: .word NVEC * 16 - 1
      .quad idt
.data
.balign 16
idt: .space NVEC * 16
