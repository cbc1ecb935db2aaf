//! How often one client may open public share links (`sharedWorkflow`): a token bucket
//! per client address (IPv6 per /64), like the sign-in limits and with their bounded
//! table. Each read is cheap but also a write (the link's access count), and no sign-in
//! stands in front of it, so it is the anonymous surface's limit.

use std::net::IpAddr;
use std::time::Instant;

use super::rate_limit::{KeyedBuckets, address_group};
use crate::error::{AppError, AppResult};

pub struct ShareLinkLimits {
    by_address: KeyedBuckets,
}

impl ShareLinkLimits {
    /// Reads per minute allowed per client address; 0 turns the limit off.
    pub fn new(per_address_per_minute: u32) -> Self {
        Self {
            by_address: KeyedBuckets::new(per_address_per_minute),
        }
    }

    /// Counts one read from `address` (unknown: not counted), or RATE_LIMITED.
    pub fn check(&self, address: Option<IpAddr>) -> AppResult<()> {
        let Some(address) = address else {
            return Ok(());
        };
        self.by_address
            .take(address_group(address), Instant::now())
            .map_err(|retry_after| AppError::RateLimited { retry_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_bucket() {
        let limits = ShareLinkLimits::new(2);
        let here: IpAddr = [192, 0, 2, 1].into();
        let there: IpAddr = [192, 0, 2, 2].into();
        assert!(limits.check(Some(here)).is_ok());
        assert!(limits.check(Some(here)).is_ok());
        assert!(matches!(
            limits.check(Some(here)),
            Err(AppError::RateLimited { .. })
        ));
        assert!(limits.check(Some(there)).is_ok());
    }
}
