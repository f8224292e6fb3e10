# hello (PVH): entered in 32-bit protected mode through the Xen PVH ELF
# note; prints a marker on COM1 and powers off through ACPI S5.
.intel_syntax noprefix
.code32
.text
.globl _start
_start:
    mov esp, 0x8ff0
    # ebx points at hvm_start_info: check its magic to prove the PVH path.
    cmp dword ptr [ebx], 0x336ec578
    jne 3f
    lea esi, [msg]
    mov dx, 0x3f8
1:  lodsb
    test al, al
    jz 2f
    out dx, al
    jmp 1b
2:  mov dx, 0x604
    mov ax, 0x3400
    out dx, ax
3:  cli
    hlt
    jmp 3b

.section .rodata
msg: .asciz "HELLO-PVH\n"

.section .note.Xen, "a"
.balign 4
.long 4          # name size
.long 4          # descriptor size
.long 18         # XEN_ELFNOTE_PHYS32_ENTRY
.asciz "Xen"
.long _start
