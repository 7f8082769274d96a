//! Provisioning of accepted channel events against the runtime on a real sled store.

mod common;

use std::time::{Duration, Instant};

use common::{boot, world};
use unify_actors::provision::{Acceptance, ChannelEvent};
use unify_actors::runtime::NewChannel;
use unify_actors::settings::Settings;

/// An event is marked provisioned in the same atomic write as its effect: once its member can
/// be read (it is durable), a crash can no longer leave the event pending, to be provisioned
/// again after the restart over whatever was written to the member since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_marked_provisioned_in_the_write_that_provisions_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), Settings::default()).await;
    let w = world(&rt, "acme").await;
    let new = NewChannel {
        name: "hooks".into(),
        channel_type: "line".into(),
        tenant_key: Some("t-1".into()),
        auto_provision: true,
        contact_api: None,
    };
    let channel = rt.create_channel(w.caac, new).await.unwrap();
    for i in 0..50 {
        let (event_id, sender) = (format!("evt-{i}"), format!("ou_{i}"));
        let event = ChannelEvent::parse(
            format!(
                r#"{{"event_id": "{event_id}", "type": "message", "tenant_key": "t-1",
                    "sender": {{"external_member_id": "{sender}"}},
                    "profile": {{"display_email": "p{i}@example.com"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let accepted = rt.accept_event(&channel, event).await.unwrap();
        assert_eq!(accepted, Acceptance::Accepted);
        let deadline = Instant::now() + Duration::from_secs(30);
        while rt
            .find_members(w.caac, Some(channel.id), Some(&sender), 0, 1)
            .await
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "{sender} is provisioned");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let record = rt
            .store()
            .get_accepted_event(channel.id, &event_id)
            .unwrap()
            .expect("the accepted event is kept");
        assert_eq!(record.pending, None, "{event_id} is still pending");
    }
    rt.shutdown().await.unwrap();
}
