//! The machine's side of the data cap: the container's memory limit (which sets the default
//! `data_bytes_max`) and the process's resident memory (for INFO). Linux files only; elsewhere
//! both are unknown and the cap is whatever was configured.
use std::fs;

/// cgroup v2, then v1: where a container's memory limit is visible from inside it.
const CGROUP_LIMIT_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
];

/// cgroup v1 reports "no limit" as a huge number (the largest page-aligned i64); anything at
/// or above this is treated as no limit.
const NO_LIMIT_FLOOR_BYTES: u64 = 1 << 60;

/// Where the node's effective data cap came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataCap {
    /// `limits.data_bytes_max` was set.
    Configured(usize),
    /// Not set; half of the container's memory limit (the rest is for change logs, dedup
    /// tables, connections and the allocator's slack).
    HalfOfContainerLimit { limit_bytes: u64, cap: usize },
    /// Not set and no container limit: no cap.
    None,
}

impl DataCap {
    pub fn bytes(self) -> usize {
        match self {
            Self::Configured(cap) | Self::HalfOfContainerLimit { cap, .. } => cap,
            Self::None => 0,
        }
    }
}

/// The cap to apply given the configured `data_bytes_max` (0: unset) and the container's
/// memory limit, if any.
pub fn effective_data_cap(configured: usize, container_limit_bytes: Option<u64>) -> DataCap {
    match (configured, container_limit_bytes) {
        (0, Some(limit_bytes)) => DataCap::HalfOfContainerLimit {
            limit_bytes,
            cap: usize::try_from(limit_bytes / 2).unwrap_or(usize::MAX),
        },
        (0, None) => DataCap::None,
        (cap, _) => DataCap::Configured(cap),
    }
}

/// The memory limit of the cgroup this process runs in, if it has one.
pub fn container_memory_limit_bytes() -> Option<u64> {
    CGROUP_LIMIT_FILES
        .iter()
        .find_map(|path| fs::read_to_string(path).ok())
        .and_then(|text| parse_cgroup_limit(&text))
}

/// A cgroup limit file's content: a byte count, or "max" (v2) / a huge number (v1) for none.
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes > 0 && bytes < NO_LIMIT_FLOOR_BYTES).then_some(bytes)
}

/// This process's resident memory, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| parse_vm_rss(&text))
}

/// The `VmRSS:  123 kB` line of a `/proc/<pid>/status` file, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_parse_and_no_limit_reads_as_none() {
        let cases = [
            ("2147483648\n", Some(2_147_483_648)),
            ("max\n", None),
            ("9223372036854771712\n", None), // cgroup v1 without a limit
            ("0\n", None),
            ("", None),
            ("garbage", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_cgroup_limit(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_cap_is_configured_else_half_the_container_limit_else_none() {
        let cases = [
            (1000, Some(4000), DataCap::Configured(1000)),
            (1000, None, DataCap::Configured(1000)),
            (
                0,
                Some(4000),
                DataCap::HalfOfContainerLimit {
                    limit_bytes: 4000,
                    cap: 2000,
                },
            ),
            (0, None, DataCap::None),
        ];
        for (configured, limit, want) in cases {
            let cap = effective_data_cap(configured, limit);
            assert_eq!(cap, want, "{configured} {limit:?}");
            assert_eq!(
                cap.bytes(),
                match want {
                    DataCap::None => 0,
                    DataCap::Configured(c) | DataCap::HalfOfContainerLimit { cap: c, .. } => c,
                }
            );
        }
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\ttern\nVmPeak:\t  999 kB\nVmRSS:\t   18660 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(18_660 * 1024));
        assert_eq!(parse_vm_rss("Name:\ttern\n"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0), "this test process");
    }
}
