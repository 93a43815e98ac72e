//! Raw bpf(2) plumbing for the AF_XDP backend, without libbpf or clang: the attribute blocks
//! of `union bpf_attr` the backend uses (layouts from include/uapi/linux/bpf.h), maps, program
//! load with the verifier log on failure, XDP links and `BPF_PROG_TEST_RUN`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::sys;

// enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_LINK_CREATE: u32 = 28;

/// enum bpf_map_type: BPF_MAP_TYPE_HASH.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// enum bpf_map_type: BPF_MAP_TYPE_XSKMAP.
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// enum bpf_prog_type: BPF_PROG_TYPE_XDP.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// enum bpf_attach_type: BPF_XDP (for BPF_LINK_CREATE).
pub const BPF_XDP: u32 = 37;
/// `BPF_ANY` map update flag: create or replace.
const BPF_ANY: u64 = 0;

/// `XDP_FLAGS_SKB_MODE` (include/uapi/linux/if_link.h): generic XDP, works on any device.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP in the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `bpf_attr` for BPF_MAP_CREATE (the leading fields; the kernel zero-extends).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `bpf_attr` for BPF_MAP_{LOOKUP,UPDATE,DELETE}_ELEM.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `bpf_attr` for BPF_PROG_LOAD (up to `expected_attach_type`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf_attr` for BPF_PROG_TEST_RUN (`test` member).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `bpf_attr` for BPF_LINK_CREATE (`link_create` member; the union tail stays zero).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _tail: [u64; 4],
}

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers, offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    /// Signed offset (jumps, memory accesses).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl BpfInsn {
    /// Builds an instruction.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        BpfInsn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A BPF map owned by this process (freed when the last descriptor and program reference go).
#[derive(Debug)]
pub struct BpfMap {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl BpfMap {
    /// BPF_MAP_CREATE.
    pub fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        name: &str,
    ) -> io::Result<BpfMap> {
        let mut attr = MapCreateAttr {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_name: name16(name),
            ..MapCreateAttr::default()
        };
        // SAFETY: `attr` is the map-create member of bpf_attr and holds no pointers.
        let fd = unsafe { sys::bpf_fd(BPF_MAP_CREATE, &mut attr) }?;
        Ok(BpfMap {
            fd,
            key_size: key_size as usize,
            value_size: value_size as usize,
        })
    }

    fn elem_attr(&self, key: &[u8], value: Option<&[u8]>, flags: u64) -> MapElemAttr {
        assert_eq!(key.len(), self.key_size, "key size");
        if let Some(v) = value {
            assert_eq!(v.len(), self.value_size, "value size");
        }
        MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.as_ptr() as u64,
            value: value.map_or(0, |v| v.as_ptr() as u64),
            flags,
        }
    }

    /// BPF_MAP_UPDATE_ELEM with BPF_ANY (insert or replace).
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let mut attr = self.elem_attr(key, Some(value), BPF_ANY);
        // SAFETY: key and value point to `key_size` / `value_size` readable bytes (checked in
        // `elem_attr`) that outlive the call.
        unsafe { sys::bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }?;
        Ok(())
    }

    /// BPF_MAP_DELETE_ELEM; false when the key was not there (ENOENT).
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        let mut attr = self.elem_attr(key, None, 0);
        // SAFETY: key points to `key_size` readable bytes that outlive the call.
        match unsafe { sys::bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// BPF_MAP_LOOKUP_ELEM into `value`; false when the key is not there.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        assert_eq!(value.len(), self.value_size, "value size");
        let mut attr = self.elem_attr(key, None, 0);
        attr.value = value.as_mut_ptr() as u64;
        // SAFETY: key points to `key_size` readable bytes, value to `value_size` writable bytes,
        // both outliving the call.
        match unsafe { sys::bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for BpfMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A loaded BPF program.
#[derive(Debug)]
pub struct BpfProg {
    fd: OwnedFd,
}

/// Program load failure with the verifier's log.
#[derive(Debug)]
pub struct VerifierError {
    /// The bpf(2) error.
    pub error: io::Error,
    /// The verifier log of the failed load.
    pub log: String,
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BPF_PROG_LOAD: {}\n{}", self.error, self.log)
    }
}

impl std::error::Error for VerifierError {}

impl BpfProg {
    /// BPF_PROG_LOAD of `insns` as a program of `prog_type`; on failure the load is retried
    /// with the verifier log enabled and the log is returned in the error.
    pub fn load(prog_type: u32, insns: &[BpfInsn], name: &str) -> io::Result<BpfProg> {
        const LICENSE: &[u8] = b"Dual MIT/GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name: name16(name),
            ..ProgLoadAttr::default()
        };
        // SAFETY: `insns` and `LICENSE` (NUL-terminated) outlive the call; no log buffer.
        match unsafe { sys::bpf_fd(BPF_PROG_LOAD, &mut attr) } {
            Ok(fd) => Ok(BpfProg { fd }),
            Err(error) => {
                let mut log = vec![0u8; 1 << 20];
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
                // SAFETY: as above, plus `log` is `log_size` writable bytes outliving the call.
                let again = unsafe { sys::bpf_fd(BPF_PROG_LOAD, &mut attr) };
                if let Ok(fd) = again {
                    return Ok(BpfProg { fd });
                }
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let log = String::from_utf8_lossy(&log[..end]).into_owned();
                Err(io::Error::new(error.kind(), VerifierError { error, log }))
            }
        }
    }

    /// BPF_PROG_TEST_RUN on `frame` (no context): the program's return value.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        // SAFETY: `frame` is `data_size_in` readable bytes outliving the call; no output
        // buffers are given (the kernel skips copying out when data_out is NULL).
        unsafe { sys::bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
        Ok(attr.retval)
    }

    /// BPF_LINK_CREATE attaching this XDP program to interface `ifindex` with `xdp_flags`
    /// (`XDP_FLAGS_SKB_MODE` or `XDP_FLAGS_DRV_MODE`). Closing the returned descriptor (or the
    /// process dying) detaches the program.
    pub fn attach_xdp(&self, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: xdp_flags,
            _tail: [0; 4],
        };
        // SAFETY: `attr` is the link-create member of bpf_attr and holds no pointers.
        unsafe { sys::bpf_fd(BPF_LINK_CREATE, &mut attr) }
    }
}

impl AsFd for BpfProg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Offsets from include/uapi/linux/bpf.h.
    #[test]
    fn attr_layouts_match_the_uapi() {
        assert_eq!(size_of::<BpfInsn>(), 8);
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, value), 16);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(LinkCreateAttr, flags), 12);
        let i = BpfInsn::new(0xbf, 6, 1, 0, 0);
        assert_eq!(i.regs, 0x16);
    }
}
