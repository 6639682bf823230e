//! The database's clock as the distributed workers' one clock: each process measures its
//! offset to PostgreSQL's time when it connects and again every [`REFRESH`], and reads its
//! wall clock corrected by that offset ([`OffsetClock`]). Due times are absolute timestamps
//! recorded in history, so with every worker on this clock whether a timer is due does not
//! depend on the host (the timer sweep compares due times with the database's time itself).

use super::reads::Readers;
use crate::clock::OffsetClock;
use crate::store::StoreError;
use std::sync::Weak;
use std::time::Duration;

/// How often the offset is measured again (clocks drift, and NTP steps them).
pub(super) const REFRESH: Duration = Duration::from_secs(60);

/// How far ahead of this machine's wall clock the database's clock is, in milliseconds:
/// each reading is off by at most half its round trip, so the reading with the shortest round
/// trip of [`SAMPLES`] is kept (a busy server or network makes some slow).
pub(super) async fn measure(readers: &Readers) -> Result<i64, StoreError> {
    let samples = readers.clock_samples(SAMPLES).await?;
    let fastest = samples.into_iter().min(); // by round trip
    Ok(fastest.map_or(0, |(_, offset)| offset))
}

/// Round trips measured each time the offset is.
const SAMPLES: usize = 3;

/// Measures the offset every [`REFRESH`] while `readers` (the store) is alive; a failed
/// measure keeps the last offset.
pub(super) async fn refresh(readers: Weak<impl AsRef<Readers>>, clock: OffsetClock) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(owner) = readers.upgrade() else {
            return;
        };
        match measure(owner.as_ref().as_ref()).await {
            Ok(offset) => clock.set_offset_ms(offset),
            Err(error) => {
                tracing::warn!(%error, "cannot measure the database's clock (the last offset stays)")
            }
        }
    }
}
