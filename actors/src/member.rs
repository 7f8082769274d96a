//! Member actors: spawned on demand, stopped when idle. Every mutation of one member passes
//! through its actor, which forwards one operation at a time to the scope and waits for the
//! durable answer, so operations on one member apply in arrival order even when some of them
//! do slow work first.
//!
//! Actors are keyed either by member id (operations on an existing member) or by identity
//! `(org, channel, external_member_id)` (creates and provisioning, before the member id is
//! known): concurrent creates of one identity queue in its actor, so the first creates the
//! member and the others find it. Bulk import bypasses member actors (see [`crate::import`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Mutex, oneshot};
use unify_storage::{Id, Member};

use crate::error::{OpError, found};
use crate::events::Reason;
use crate::ops::{MemberOp, NewMember};
use crate::router::Router;
use crate::scope::ScopeMsg;

/// The identity of a member: unique per org (SPEC 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub org_id: Id,
    /// `None` for maac members.
    pub channel_id: Option<Id>,
    pub external_member_id: String,
}

/// What a member actor serializes: one existing member, or one identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActorKey {
    Member(Id),
    Identity(Identity),
}

/// Work run inside an identity's actor, one at a time; it reports its result itself.
pub type IdentityWork = Box<dyn FnOnce(IdentityHandle) -> BoxFuture<'static, ()> + Send>;

/// Messages of a member actor.
pub enum MemberMsg {
    Op {
        org_id: Id,
        op: Box<MemberOp>,
        reply: RpcReplyPort<Result<Option<Member>, OpError>>,
    },
    /// Runs work for the identity of an identity-keyed actor.
    Run(IdentityWork),
    /// Periodic idle check.
    Tick,
}

impl std::fmt::Debug for MemberMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberMsg::Op { org_id, op, .. } => f
                .debug_struct("Op")
                .field("org_id", org_id)
                .field("op", op)
                .finish(),
            MemberMsg::Run(_) => f.write_str("Run"),
            MemberMsg::Tick => f.write_str("Tick"),
        }
    }
}

impl std::fmt::Debug for IdentityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityHandle")
            .field("identity", &self.identity)
            .finish()
    }
}

/// What work running in an identity's actor may do. Everything it does for the identity is
/// serialized with every other create or provisioning of that identity; updates of the
/// member go through the member's own (id-keyed) actor, so they are also ordered with the
/// operator's operations on it.
pub struct IdentityHandle {
    identity: Identity,
    router: Arc<Router>,
    registry: Arc<MemberRegistry>,
}

impl IdentityHandle {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Returns the member with this identity, if it exists.
    pub async fn find(&self) -> Result<Option<Member>, OpError> {
        let Identity {
            org_id,
            channel_id,
            external_member_id,
        } = &self.identity;
        let Some(member_id) =
            self.router
                .store
                .lookup_member_by_ext(*org_id, *channel_id, external_member_id)?
        else {
            return Ok(None);
        };
        let scope_id = self.router.scope_of(*org_id)?;
        let org_id = *org_id;
        let member = self
            .router
            .call(scope_id, |reply| ScopeMsg::GetMember {
                org_id,
                member_id,
                reply,
            })
            .await;
        match member {
            Ok(m) => Ok(Some(m)),
            Err(OpError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the member, or returns the existing one (`false`). The new member's channel and
    /// external id are those of the identity; `reason` goes on its events (`member_created`,
    /// `provisioned`).
    pub async fn get_or_create(
        &self,
        mut member: NewMember,
        reason: Reason,
    ) -> Result<(Member, bool), OpError> {
        member.channel_id = self.identity.channel_id;
        member.external_member_id = self.identity.external_member_id.clone();
        let org_id = self.identity.org_id;
        let scope_id = self.router.scope_of(org_id)?;
        self.router
            .call(scope_id, |reply| ScopeMsg::Create {
                org_id,
                member,
                reason,
                reply,
            })
            .await
    }

    /// Applies an operation to a member of the identity's org through that member's actor.
    pub async fn mutate(&self, member_id: Id, op: MemberOp) -> Result<Option<Member>, OpError> {
        self.registry
            .send(&self.router, member_id, self.identity.org_id, op)
            .await
    }
}

/// A running member actor and its count of queued operations.
#[derive(Debug, Clone)]
struct Running {
    actor: ActorRef<MemberMsg>,
    queued: Arc<AtomicUsize>,
}

/// The live member actors. Queued counts change under the same lock as retirement, so an
/// actor never stops with an operation on its way.
#[derive(Debug, Default)]
pub struct MemberRegistry {
    running: Mutex<HashMap<ActorKey, Running>>,
}

impl MemberRegistry {
    /// Returns the number of operations queued or running for the member.
    pub async fn queued(&self, member_id: Id) -> usize {
        self.running
            .lock()
            .await
            .get(&ActorKey::Member(member_id))
            .map_or(0, |r| r.queued.load(Ordering::Acquire))
    }

    /// Returns the actor of `key` (spawning it if needed) with one more operation counted.
    async fn enqueue(
        self: &Arc<Self>,
        router: &Arc<Router>,
        key: ActorKey,
    ) -> Result<Running, OpError> {
        let mut map = self.running.lock().await;
        let running = match map.get(&key) {
            Some(r) => r.clone(),
            None => {
                let queued = Arc::new(AtomicUsize::new(0));
                let args = MemberArgs {
                    key: key.clone(),
                    router: router.clone(),
                    registry: self.clone(),
                    queued: queued.clone(),
                };
                let (actor, _) = Actor::spawn(None, MemberActor, args)
                    .await
                    .map_err(|e| OpError::Unavailable(format!("member actor: {e}")))?;
                let r = Running { actor, queued };
                map.insert(key, r.clone());
                r
            }
        };
        running.queued.fetch_add(1, Ordering::AcqRel);
        Ok(running)
    }

    /// Runs `work` in the identity's actor after the work queued before it, and returns its
    /// result. This is the entry point of creates and provisioning ("get or create, then maybe
    /// update" for one identity); `work` gets an [`IdentityHandle`].
    pub async fn run<T, F, Fut>(
        self: &Arc<Self>,
        router: &Arc<Router>,
        identity: Identity,
        work: F,
    ) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(IdentityHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, OpError>> + Send + 'static,
    {
        found(router.store.get_org(identity.org_id), "organization")?;
        let running = self.enqueue(router, ActorKey::Identity(identity)).await?;
        let (tx, rx) = oneshot::channel();
        let work: IdentityWork = Box::new(move |handle| {
            Box::pin(async move {
                let _ = tx.send(work(handle).await);
            })
        });
        let stopped = || OpError::Unavailable("the identity actor stopped".into());
        if running.actor.send_message(MemberMsg::Run(work)).is_err() {
            running.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(stopped());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => {
                // The work was dropped unrun (or panicked): the actor did not count it off.
                running.queued.fetch_sub(1, Ordering::AcqRel);
                Err(stopped())
            }
        }
    }

    /// Sends an operation to the member's actor (spawning it if needed) and waits for the answer.
    pub async fn send(
        self: &Arc<Self>,
        router: &Arc<Router>,
        member_id: Id,
        org_id: Id,
        op: MemberOp,
    ) -> Result<Option<Member>, OpError> {
        let running = self.enqueue(router, ActorKey::Member(member_id)).await?;
        let sent = running.actor.call(
            |reply| MemberMsg::Op {
                org_id,
                op: Box::new(op),
                reply,
            },
            None,
        );
        match sent.await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => {
                running.queued.fetch_sub(1, Ordering::AcqRel);
                Err(OpError::Unavailable("the member actor stopped".into()))
            }
        }
    }

    /// Removes the actor of `key` if nothing is queued; returns whether it was removed.
    async fn retire(&self, key: &ActorKey, queued: &AtomicUsize) -> bool {
        let mut map = self.running.lock().await;
        if queued.load(Ordering::Acquire) == 0 {
            map.remove(key);
            true
        } else {
            false
        }
    }

    /// Stops every member actor.
    pub async fn stop_all(&self) {
        let mut map = self.running.lock().await;
        for (_, r) in map.drain() {
            r.actor.stop(None);
        }
    }
}

/// Start-up arguments of a member actor.
#[derive(Debug, Clone)]
pub struct MemberArgs {
    pub key: ActorKey,
    pub router: Arc<Router>,
    pub registry: Arc<MemberRegistry>,
    pub queued: Arc<AtomicUsize>,
}

/// The member actor (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberActor;

/// State of a member actor.
#[derive(Debug)]
pub struct MemberState {
    args: MemberArgs,
    last_active: Instant,
}

impl Actor for MemberActor {
    type Msg = MemberMsg;
    type State = MemberState;
    type Arguments = MemberArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MemberMsg>,
        args: MemberArgs,
    ) -> Result<MemberState, ActorProcessingErr> {
        let idle = args.router.settings.member_idle;
        myself.send_interval(idle / 2 + std::time::Duration::from_millis(1), || {
            MemberMsg::Tick
        });
        Ok(MemberState {
            args,
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        message: MemberMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemberMsg::Op { org_id, op, reply } => {
                let router = &state.args.router;
                let result = match (&state.args.key, router.scope_of(org_id)) {
                    (ActorKey::Identity(_), _) => Err(OpError::invalid(
                        "member operations go to the member's actor",
                    )),
                    (&ActorKey::Member(member_id), Ok(scope_id)) => {
                        router
                            .call(scope_id, |reply| ScopeMsg::Mutate {
                                org_id,
                                member_id,
                                op: *op,
                                reply,
                            })
                            .await
                    }
                    (_, Err(e)) => Err(e),
                };
                state.args.queued.fetch_sub(1, Ordering::AcqRel);
                state.last_active = Instant::now();
                let _ = reply.send(result);
            }
            MemberMsg::Run(work) => {
                if let ActorKey::Identity(identity) = &state.args.key {
                    let handle = IdentityHandle {
                        identity: identity.clone(),
                        router: state.args.router.clone(),
                        registry: state.args.registry.clone(),
                    };
                    work(handle).await;
                    state.args.queued.fetch_sub(1, Ordering::AcqRel);
                    state.last_active = Instant::now();
                }
                // Work sent to a member-keyed actor is dropped; its caller counts it off.
            }
            MemberMsg::Tick => {
                let idle = state.args.router.settings.member_idle;
                if state.last_active.elapsed() >= idle
                    && state
                        .args
                        .registry
                        .retire(&state.args.key, &state.args.queued)
                        .await
                {
                    myself.stop(None);
                }
            }
        }
        Ok(())
    }
}
