//! A node's configuration. The binary loads it with figment (TOML file, then `TERN_*`
//! environment variables nested with `__`, e.g. `TERN_LIMITS__CONNECTIONS_MAX`); every field
//! has a default so an empty file is a valid single-node setup.
use crate::core::SLOT_COUNT;
use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

/// Most partition arbiters (threads) a node may run. Far above any core count this node type
/// targets; it only catches typos such as `workers = 100000` that would exhaust threads.
pub const WORKERS_MAX: usize = 1024;

/// Longest housekeeping interval: expiry and tombstone sweeps must run at least this often.
pub const TICK_MS_MAX: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address of the RESP listener; port 0 lets the OS choose (tests).
    pub listen: SocketAddr,
    /// Number of partitions of the keyspace (1..=16384). Every node and site must agree on it.
    pub partitions: u32,
    /// This site's id, stamped on every version this node creates.
    pub site: u16,
    /// When set, clients must AUTH (or HELLO ... AUTH) with this password first.
    pub requirepass: Option<String>,
    /// Partition arbiters (threads); 0 means one per available core.
    pub workers: usize,
    /// Housekeeping interval of every partition (expiry and tombstone sweeps).
    pub tick_ms: u64,
    pub limits: Limits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6379)),
            partitions: 64,
            site: 1,
            requirepass: None,
            workers: 0,
            tick_ms: 100,
            limits: Limits::default(),
        }
    }
}

/// A configuration value the node cannot run with; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("partitions: must be between 1 and {SLOT_COUNT}, got {0}")]
    Partitions(u32),
    #[error("workers: must be at most {WORKERS_MAX} (0 = one per core), got {0}")]
    TooManyWorkers(usize),
    #[error("tick_ms: must be between 1 and {TICK_MS_MAX}, got {0}")]
    TickMs(u64),
    #[error("requirepass: must not be empty; leave it unset to disable authentication")]
    EmptyPassword,
    #[error("limits.{field}: must be at least {min}, got {value}")]
    LimitTooSmall {
        field: &'static str,
        min: u64,
        value: u64,
    },
    #[error("limits.{field}: must be at most {max}, got {value}")]
    LimitTooLarge {
        field: &'static str,
        max: usize,
        value: usize,
    },
    #[error("limits.{field}: must not exceed limits.frame_bytes_max ({frame}), got {value}")]
    LimitAboveFrame {
        field: &'static str,
        frame: usize,
        value: usize,
    },
}

impl NodeConfig {
    /// Checks every value the node depends on, so a bad config fails at startup with a clear
    /// message rather than later with a confusing one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.partitions == 0 || self.partitions > u32::from(SLOT_COUNT) {
            return Err(ConfigError::Partitions(self.partitions));
        }
        if self.workers > WORKERS_MAX {
            return Err(ConfigError::TooManyWorkers(self.workers));
        }
        if self.tick_ms == 0 || self.tick_ms > TICK_MS_MAX {
            return Err(ConfigError::TickMs(self.tick_ms));
        }
        if self.requirepass.as_deref() == Some("") {
            return Err(ConfigError::EmptyPassword);
        }
        self.validate_limits()
    }

    /// Number of partition arbiters to start: `workers`, or one per core when 0.
    pub fn effective_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        // The smallest values with which the node still works: a frame must hold at least
        // `*1\r\n$4\r\nPING\r\n`, SET needs 3 arguments, and so on.
        let minimums: [(&'static str, usize, usize); 9] = [
            ("frame_bytes_max", l.frame_bytes_max, 64),
            ("value_bytes_max", l.value_bytes_max, 1),
            ("key_bytes_max", l.key_bytes_max, 1),
            ("args_per_command_max", l.args_per_command_max, 3),
            ("connections_max", l.connections_max, 1),
            ("pipeline_commands_max", l.pipeline_commands_max, 1),
            (
                "partition_mailbox_messages_max",
                l.partition_mailbox_messages_max,
                1,
            ),
            ("expiry_sweep_keys_max", l.expiry_sweep_keys_max, 1),
            ("scan_count_max", l.scan_count_max, 1),
        ];
        for (field, value, min) in minimums {
            if value < min {
                return Err(ConfigError::LimitTooSmall {
                    field,
                    min: min as u64,
                    value: value as u64,
                });
            }
        }
        if l.ttl_ms_max == 0 {
            return Err(ConfigError::LimitTooSmall {
                field: "ttl_ms_max",
                min: 1,
                value: 0,
            });
        }
        // tokio's semaphore (the mailbox bound) refuses more than usize::MAX >> 3 permits.
        let mailbox_max = tokio::sync::Semaphore::MAX_PERMITS;
        if l.partition_mailbox_messages_max > mailbox_max {
            return Err(ConfigError::LimitTooLarge {
                field: "partition_mailbox_messages_max",
                max: mailbox_max,
                value: l.partition_mailbox_messages_max,
            });
        }
        for (field, value) in [
            ("value_bytes_max", l.value_bytes_max),
            ("key_bytes_max", l.key_bytes_max),
        ] {
            if value > l.frame_bytes_max {
                return Err(ConfigError::LimitAboveFrame {
                    field,
                    frame: l.frame_bytes_max,
                    value,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(NodeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn invalid_values_are_named() {
        type Mutation = Box<dyn Fn(&mut NodeConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("partitions", Box::new(|c| c.partitions = 0)),
            ("partitions", Box::new(|c| c.partitions = 16385)),
            ("workers", Box::new(|c| c.workers = WORKERS_MAX + 1)),
            ("tick_ms", Box::new(|c| c.tick_ms = 0)),
            (
                "requirepass",
                Box::new(|c| c.requirepass = Some(String::new())),
            ),
            (
                "limits.connections_max",
                Box::new(|c| c.limits.connections_max = 0),
            ),
            (
                "limits.args_per_command_max",
                Box::new(|c| c.limits.args_per_command_max = 2),
            ),
            (
                "limits.value_bytes_max",
                Box::new(|c| c.limits.value_bytes_max = c.limits.frame_bytes_max + 1),
            ),
        ];
        for (field, mutate) in cases {
            let mut config = NodeConfig::default();
            mutate(&mut config);
            let err = config.validate().expect_err(field).to_string();
            assert!(err.starts_with(&format!("{field}:")), "{field}: got {err}");
        }
    }
}
