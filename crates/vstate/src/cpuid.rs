//! CPUID for each vCPU: the host's `KVM_GET_SUPPORTED_CPUID`, filtered and
//! completed with the VM's topology (vmd has one vCPU and no such code; this
//! follows what Firecracker's and Cloud Hypervisor's `cpuid` modules do).
//!
//! The topology presented is one package, one thread per core, `n` cores;
//! APIC id = vCPU index.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Errors from building a CPUID table.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The filtered table could not be turned back into a KVM CpuId.
    #[error("could not build the CPUID table")]
    Build,
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_XSAVE: u32 = 0xd;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_EXT_ADDR_SIZES: u32 = 0x8000_0008;
const LEAF_EXT_CACHE_TOPO: u32 = 0x8000_001d;
const LEAF_EXT_APIC_ID: u32 = 0x8000_001e;

/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: HTT (the logical-processor count in EBX is valid).
const EDX_HTT: u32 = 1 << 28;
/// Leaf 0x80000001 ECX: CmpLegacy.
const ECX_CMP_LEGACY: u32 = 1 << 1;

/// Number of bits needed for `n` distinct ids.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn entry(function: u32, index: u32, flags: u32) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags,
        ..Default::default()
    }
}

/// Builds the CPUID table of vCPU `cpu` (also its APIC id) in a VM of
/// `nr_vcpus`, from the host-supported entries.
pub fn filter(supported: &[kvm_cpuid_entry2], cpu: u8, nr_vcpus: u8) -> Vec<kvm_cpuid_entry2> {
    let n = u32::from(nr_vcpus.max(1));
    let apic = u32::from(cpu);
    let shift = bits_for(n);
    let max_basic = supported
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(supported.len() + 4);
    for e in supported {
        let mut e = *e;
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic << 24) | ((n.min(255)) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            // Cores per package - 1 in 31:26; threads sharing this cache - 1 in 25:14
            // (one thread per core, so 0 except for the last-level cache).
            LEAF_CACHE_PARAMS if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((n - 1).min(63) << 26) | (sharing.min(0xfff) << 14);
            }
            // No PMU: guests must not program host counters through us.
            LEAF_PMU => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            // Rebuilt below for all levels.
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => continue,
            LEAF_EXT_FEATURES => {
                if n > 1 {
                    e.ecx |= ECX_CMP_LEGACY;
                } else {
                    e.ecx &= !ECX_CMP_LEGACY;
                }
            }
            LEAF_EXT_ADDR_SIZES => {
                // NC (cores - 1) in 7:0, ApicIdSize in 15:12.
                e.ecx = (e.ecx & !0xf0ff) | ((n - 1) & 0xff) | (shift << 12);
            }
            LEAF_EXT_CACHE_TOPO if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | (sharing.min(0xfff) << 14);
            }
            LEAF_EXT_APIC_ID => {
                e.eax = apic;
                e.ebx = apic & 0xff; // core id; one thread per core
                e.ecx = 0; // one node
                e.edx = 0;
            }
            _ => {}
        }
        out.push(e);
    }
    // Extended topology: level 0 SMT (1 thread), level 1 core (n cores), then the terminator.
    let topo_leaves: &[u32] = if max_basic >= LEAF_TOPOLOGY_V2 {
        &[LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2]
    } else if max_basic >= LEAF_TOPOLOGY {
        &[LEAF_TOPOLOGY]
    } else {
        &[]
    };
    for &leaf in topo_leaves {
        let mut smt = entry(leaf, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        smt.eax = 0;
        smt.ebx = 1;
        smt.ecx = 1 << 8;
        smt.edx = apic;
        let mut core = entry(leaf, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        core.eax = shift;
        core.ebx = n;
        core.ecx = (2 << 8) | 1;
        core.edx = apic;
        let mut end = entry(leaf, 2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        end.ecx = 2;
        end.edx = apic;
        out.extend([smt, core, end]);
    }
    fix_xsave(&mut out);
    ensure_hypervisor_leaf(&mut out);
    out
}

/// Keeps leaf 0xD self-consistent: only sub-leaves of components the
/// guest may enable, and a maximum size covering all of them.
fn fix_xsave(entries: &mut Vec<kvm_cpuid_entry2>) {
    let Some(root) = entries
        .iter()
        .find(|e| e.function == LEAF_XSAVE && e.index == 0)
        .copied()
    else {
        return;
    };
    let mask = u64::from(root.eax) | (u64::from(root.edx) << 32);
    entries.retain(|e| {
        e.function != LEAF_XSAVE || e.index < 2 || (e.index < 64 && mask & (1 << e.index) != 0)
    });
    // The legacy area and header take 576 bytes.
    let mut max = 576u32;
    for e in entries
        .iter()
        .filter(|e| e.function == LEAF_XSAVE && e.index >= 2)
    {
        max = max.max(e.ebx.saturating_add(e.eax));
    }
    if let Some(r) = entries
        .iter_mut()
        .find(|e| e.function == LEAF_XSAVE && e.index == 0)
    {
        r.ecx = r.ecx.max(max);
        r.ebx = r.ebx.min(r.ecx);
    }
}

/// KVM's signature leaf, so guests find kvmclock and paravirt features.
fn ensure_hypervisor_leaf(entries: &mut Vec<kvm_cpuid_entry2>) {
    let sig = *b"KVMKVMKVM\0\0\0";
    let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    let max = entries
        .iter()
        .filter(|e| e.function > LEAF_HYPERVISOR && e.function < LEAF_HYPERVISOR + 0x100)
        .map(|e| e.function)
        .max()
        .unwrap_or(LEAF_HYPERVISOR);
    entries.retain(|e| e.function != LEAF_HYPERVISOR);
    let mut e = entry(LEAF_HYPERVISOR, 0, 0);
    e.eax = max;
    e.ebx = word(0);
    e.ecx = word(4);
    e.edx = word(8);
    entries.push(e);
}

/// [`filter`] into the KVM FAM wrapper `KVM_SET_CPUID2` takes.
pub fn for_vcpu(supported: &CpuId, cpu: u8, nr_vcpus: u8) -> Result<CpuId, CpuidError> {
    CpuId::from_entries(&filter(supported.as_slice(), cpu, nr_vcpus)).map_err(|_| CpuidError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<kvm_cpuid_entry2> {
        let mut v = Vec::new();
        let mut e = |f, i, eax, ebx, ecx, edx| {
            v.push(kvm_cpuid_entry2 {
                function: f,
                index: i,
                eax,
                ebx,
                ecx,
                edx,
                ..Default::default()
            })
        };
        e(0, 0, 0x1c, 0, 0, 0);
        e(1, 0, 0xa10f11, 0x0102_0800, 0x0120_2000, 0x078b_fbff);
        e(4, 0, 0x121, 0, 0, 0);
        e(4, 1, 0x163, 0, 0, 0);
        e(0xa, 0, 0x7603, 1, 2, 3);
        e(0xb, 0, 0, 0, 0, 1);
        // XSAVE: x87|SSE|AVX supported; a stale sub-leaf 9 that is not in the mask.
        e(0xd, 0, 0x7, 0x340, 0x300, 0);
        e(0xd, 1, 0, 0, 0, 0);
        e(0xd, 2, 0x100, 0x240, 0, 0);
        e(0xd, 9, 0x8, 0xa80, 0, 0);
        e(0x4000_0000, 0, 0x4000_0001, 0, 0, 0);
        e(0x4000_0001, 0, 0x7efb, 0, 0, 0);
        e(0x8000_0001, 0, 0, 0, 0, 0);
        e(0x8000_0008, 0, 0x3030, 0, 0x7001, 0);
        e(0x8000_001e, 0, 7, 7, 7, 7);
        v
    }

    fn find(v: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *v.iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap_or_else(|| panic!("leaf {f:#x}/{i} missing"))
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let v = filter(&host(), 2, 4);
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let one = filter(&host(), 0, 1);
        assert_eq!(find(&one, 1, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaf_b_describes_n_cores() {
        let v = filter(&host(), 3, 5);
        let smt = find(&v, 0xb, 0);
        let core = find(&v, 0xb, 1);
        let end = find(&v, 0xb, 2);
        assert_eq!((smt.ebx, smt.ecx >> 8 & 0xff, smt.edx), (1, 1, 3));
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8 & 0xff, core.edx),
            (3, 5, 2, 3)
        );
        assert_eq!(end.ecx >> 8 & 0xff, 0, "level 2 is the terminator");
        assert!(
            v.iter().all(|e| e.function != 0x1f),
            "max leaf 0x1c has no 0x1f"
        );
        assert_eq!(v.iter().filter(|e| e.function == 0xb).count(), 3);
    }

    #[test]
    fn cache_and_amd_leaves_match_the_core_count() {
        let v = filter(&host(), 1, 4);
        assert_eq!(find(&v, 4, 0).eax >> 26, 3);
        assert_eq!(find(&v, 4, 1).eax >> 26, 3);
        assert_eq!(find(&v, 0x8000_0008, 0).ecx & 0xff, 3);
        assert_eq!((find(&v, 0x8000_0008, 0).ecx >> 12) & 0xf, 2);
        assert_ne!(find(&v, 0x8000_0001, 0).ecx & ECX_CMP_LEGACY, 0);
        assert_eq!(find(&v, 0x8000_001e, 0).eax, 1);
        assert_eq!(find(&v, 0xa, 0).eax, 0, "no PMU");
    }

    #[test]
    fn xsave_leaf_is_consistent_and_hypervisor_leaf_is_kvm() {
        let v = filter(&host(), 0, 1);
        assert!(v.iter().all(|e| !(e.function == 0xd && e.index == 9)));
        let root = find(&v, 0xd, 0);
        assert_eq!(root.ecx, 0x340, "max size covers AVX at 0x240+0x100");
        assert!(root.ebx <= root.ecx);
        let hv = find(&v, 0x4000_0000, 0);
        assert_eq!(hv.eax, 0x4000_0001);
        let mut sig = Vec::new();
        for w in [hv.ebx, hv.ecx, hv.edx] {
            sig.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(&sig[..9], b"KVMKVMKVM");
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5)
            ],
            [0, 1, 2, 2, 3]
        );
    }
}
