//! The driver's view of its scope's events: every event received live, and on start the
//! replay of the retained ones, read as the websocket's `?since=` path reads them (through the
//! runtime's event log), so that the crash test can check that what was published survives.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use unify_actors::event_log::EventLog;
use unify_actors::hub::Subscription;
use unify_storage::Id;

use super::Line;

/// Events read per event-log access while replaying.
const REPLAY_CHUNK: usize = 1024;

/// Replays attempted before the driver gives up on a log trimmed under it.
const REPLAY_ATTEMPTS: usize = 8;

/// Pause of the log follower when it has read everything.
const FOLLOW_IDLE: Duration = Duration::from_millis(1);

/// Prints every event of the subscription as it arrives, `lagged` when it fell behind.
pub fn print_live(mut live: Subscription) {
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) => Line::Event {
                    seq: event.seq,
                    payload: event.to_json(),
                }
                .print(),
                Err(RecvError::Lagged(_)) => Line::Lagged.print(),
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Reads the log after `after` over and over as a websocket client replaying `?since=` does
/// while the load runs, and prints every event read: whatever a client can read must be
/// durable, like what is published.
pub fn follow(log: EventLog, scope_id: Id, after: u64) {
    tokio::spawn(async move {
        let mut cursor = after;
        loop {
            let chunk = match log.after(scope_id, cursor, REPLAY_CHUNK).await {
                Ok(chunk) => chunk,
                Err(err) => {
                    tracing::warn!(scope_id, error = %err, "following the event log failed");
                    Vec::new()
                }
            };
            if chunk.is_empty() {
                tokio::time::sleep(FOLLOW_IDLE).await;
            }
            for record in chunk {
                cursor = record.seq;
                Line::Read {
                    seq: record.seq,
                    payload: record.payload,
                }
                .print();
            }
        }
    });
}

/// Prints the scope's retained events from the oldest one to the newest one at the start of
/// the replay, then `retained` with those bounds: the test expects every seq between them.
/// Events trimmed before the first read (retention moves with every commit) make it start
/// again from the new oldest event.
/// Returns the newest seq replayed.
pub async fn print_replay(log: &EventLog, scope_id: Id) -> anyhow::Result<u64> {
    'attempt: for _ in 0..REPLAY_ATTEMPTS {
        let Some(oldest) = log.oldest_seq(scope_id).await? else {
            Line::Retained {
                oldest: None,
                newest: None,
            }
            .print();
            return Ok(0);
        };
        let newest = log.newest_seq(scope_id).await?.unwrap_or(oldest);
        let mut replayed = Vec::new();
        let mut cursor = oldest - 1;
        while cursor < newest {
            let chunk = log.after(scope_id, cursor, REPLAY_CHUNK).await?;
            let Some(first) = chunk.first() else { break };
            if first.seq != cursor + 1 {
                if cursor + 1 == oldest {
                    // Trimmed since `oldest` was read.
                    continue 'attempt;
                }
                // A hole in the log: the test finds the missing seqs.
                break;
            }
            for record in chunk.into_iter().take_while(|r| r.seq <= newest) {
                cursor = record.seq;
                replayed.push(record);
            }
        }
        for record in replayed {
            Line::Replayed {
                seq: record.seq,
                payload: record.payload,
            }
            .print();
        }
        Line::Retained {
            oldest: Some(oldest),
            newest: Some(newest),
        }
        .print();
        return Ok(newest);
    }
    anyhow::bail!("the event log of scope {scope_id} kept being trimmed during the replay")
}
