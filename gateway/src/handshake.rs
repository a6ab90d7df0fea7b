//! Connection handshake checks shared by both ends: who is talking to whom, and which protocol
//! version they agree on.
use crate::wire::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use tern_conflict::SiteId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("peer says it is {got}, but this end serves {expected}")]
    WrongPeer { expected: SiteId, got: SiteId },
    #[error("peer addressed {got}, but this site is {expected} (misrouted connection)")]
    WrongTarget { expected: SiteId, got: SiteId },
    #[error(
        "peer speaks protocol version {offered}; this build accepts {PROTOCOL_VERSION_MIN} to \
         {PROTOCOL_VERSION}"
    )]
    UnsupportedProtocol { offered: u16 },
}

/// The version both ends speak when the peer offers `offered`.
pub fn negotiate_version(offered: u16) -> Result<u16, HandshakeError> {
    if offered < PROTOCOL_VERSION_MIN {
        return Err(HandshakeError::UnsupportedProtocol { offered });
    }
    Ok(offered.min(PROTOCOL_VERSION))
}

/// Check the version a peer answered with is one this build speaks.
pub fn check_agreed_version(agreed: u16) -> Result<u16, HandshakeError> {
    if (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&agreed) {
        Ok(agreed)
    } else {
        Err(HandshakeError::UnsupportedProtocol { offered: agreed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_down_and_reject_too_old() {
        assert_eq!(negotiate_version(PROTOCOL_VERSION), Ok(PROTOCOL_VERSION));
        assert_eq!(
            negotiate_version(PROTOCOL_VERSION + 7),
            Ok(PROTOCOL_VERSION)
        );
        assert_eq!(
            negotiate_version(0),
            Err(HandshakeError::UnsupportedProtocol { offered: 0 })
        );
        assert_eq!(check_agreed_version(PROTOCOL_VERSION), Ok(PROTOCOL_VERSION));
        assert!(check_agreed_version(PROTOCOL_VERSION + 1).is_err());
    }
}
