//! The VM registry: registration, validation, ids, instances and
//! permissions (vmd.c `vm_register`, `vm_claimid`, `vm_instance`,
//! `vm_checkperm`, `vm_checkaccess`).
