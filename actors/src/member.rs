//! Member actors and identity actors: spawned on demand, stopped when idle, two actor types
//! each with only its own messages.
//!
//! - A [`MemberActor`] serializes every mutation of one existing member: it forwards one
//!   operation at a time to the scope and waits for the durable answer, so operations on one
//!   member apply in arrival order even when some of them do slow work first.
//! - An [`IdentityActor`] serializes the work of one identity `(org, channel,
//!   external_member_id)` before its member id is known (creates and provisioning):
//!   concurrent creates of one identity queue in its actor, so the first creates the member
//!   and the others find it.
//!
//! Bulk import bypasses both (see `import.rs`). Above the scope client, which is their only
//! way into a scope; below the services. They import no service.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Mutex, oneshot};
use unify_storage::{Id, Member};

use crate::error::{OpError, found};
use crate::events::Reason;
use crate::ops::{MemberOp, NewMember};
use crate::protocol::ScopeMsg;
use crate::scope_client::ScopeClient;

/// The identity of a member: unique per org (SPEC 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub org_id: Id,
    /// `None` for maac members.
    pub channel_id: Option<Id>,
    pub external_member_id: String,
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
    /// Periodic idle check.
    Tick,
}

/// Messages of an identity actor.
pub enum IdentityMsg {
    /// Runs work for the actor's identity.
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
            MemberMsg::Tick => f.write_str("Tick"),
        }
    }
}

impl std::fmt::Debug for IdentityMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityMsg::Run(_) => f.write_str("Run"),
            IdentityMsg::Tick => f.write_str("Tick"),
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
/// member go through the member's own actor, so they are also ordered with the operator's
/// operations on it.
pub struct IdentityHandle {
    identity: Identity,
    client: Arc<ScopeClient>,
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
        let (org_id, channel_id, external_member_id) =
            (*org_id, *channel_id, external_member_id.clone());
        self.client
            .call(org_id, |reply| ScopeMsg::FindIdentity {
                org_id,
                channel_id,
                external_member_id,
                reply,
            })
            .await
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
        self.client
            .call(org_id, |reply| ScopeMsg::Create {
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
            .send(&self.client, member_id, self.identity.org_id, op)
            .await
    }
}

/// A running actor and its count of queued operations.
#[derive(Debug)]
struct Running<M> {
    actor: ActorRef<M>,
    queued: Arc<AtomicUsize>,
}

impl<M> Clone for Running<M> {
    fn clone(&self) -> Self {
        Running {
            actor: self.actor.clone(),
            queued: self.queued.clone(),
        }
    }
}

/// The live actors of one type, by key. Queued counts change under the same lock as
/// retirement, so an actor never stops with an operation on its way.
#[derive(Debug)]
struct Live<K, M> {
    running: Mutex<HashMap<K, Running<M>>>,
}

impl<K, M> Default for Live<K, M> {
    fn default() -> Self {
        Live {
            running: Mutex::default(),
        }
    }
}

impl<K: Clone + Eq + Hash, M: ractor::Message> Live<K, M> {
    /// Returns the actor of `key` (spawning `actor` with `args(queued)` if needed) with one
    /// more operation counted.
    async fn enqueue<A>(
        &self,
        key: K,
        actor: A,
        args: impl FnOnce(Arc<AtomicUsize>) -> A::Arguments,
    ) -> Result<Running<M>, OpError>
    where
        A: Actor<Msg = M>,
    {
        let mut map = self.running.lock().await;
        let running = match map.get(&key) {
            Some(r) => r.clone(),
            None => {
                let queued = Arc::new(AtomicUsize::new(0));
                let (actor, _) = Actor::spawn(None, actor, args(queued.clone()))
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

    /// Returns the number of operations queued or running for `key`.
    async fn queued(&self, key: &K) -> usize {
        self.running
            .lock()
            .await
            .get(key)
            .map_or(0, |r| r.queued.load(Ordering::Acquire))
    }

    /// Removes the actor of `key` if nothing is queued; returns whether it was removed.
    async fn retire(&self, key: &K, queued: &AtomicUsize) -> bool {
        let mut map = self.running.lock().await;
        if queued.load(Ordering::Acquire) == 0 {
            map.remove(key);
            true
        } else {
            false
        }
    }

    async fn stop_all(&self) {
        let mut map = self.running.lock().await;
        for (_, r) in map.drain() {
            r.actor.stop(None);
        }
    }
}

/// The live member and identity actors.
#[derive(Debug, Default)]
pub struct MemberRegistry {
    members: Live<Id, MemberMsg>,
    identities: Live<Identity, IdentityMsg>,
}

impl MemberRegistry {
    /// Returns the number of operations queued or running for the member.
    pub async fn queued(&self, member_id: Id) -> usize {
        self.members.queued(&member_id).await
    }

    /// Runs `work` in the identity's actor after the work queued before it, and returns its
    /// result. This is the entry point of creates and provisioning ("get or create, then maybe
    /// update" for one identity); `work` gets an [`IdentityHandle`].
    pub async fn run<T, F, Fut>(
        self: &Arc<Self>,
        client: &Arc<ScopeClient>,
        identity: Identity,
        work: F,
    ) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(IdentityHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, OpError>> + Send + 'static,
    {
        found(client.store().get_org(identity.org_id), "organization")?;
        let running = self
            .identities
            .enqueue(identity.clone(), IdentityActor, |queued| IdentityArgs {
                identity,
                client: client.clone(),
                registry: self.clone(),
                queued,
            })
            .await?;
        let (tx, rx) = oneshot::channel();
        let work: IdentityWork = Box::new(move |handle| {
            Box::pin(async move {
                let _ = tx.send(work(handle).await);
            })
        });
        let stopped = || OpError::Unavailable("the identity actor stopped".into());
        if running.actor.send_message(IdentityMsg::Run(work)).is_err() {
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
        client: &Arc<ScopeClient>,
        member_id: Id,
        org_id: Id,
        op: MemberOp,
    ) -> Result<Option<Member>, OpError> {
        let running = self
            .members
            .enqueue(member_id, MemberActor, |queued| MemberArgs {
                member_id,
                client: client.clone(),
                registry: self.clone(),
                queued,
            })
            .await?;
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

    /// Stops every member and identity actor.
    pub async fn stop_all(&self) {
        self.members.stop_all().await;
        self.identities.stop_all().await;
    }
}

/// Counts one actor's idleness: it is retired once idle for `member_idle` with nothing queued.
#[derive(Debug)]
struct Idle {
    idle: Duration,
    last_active: Instant,
}

impl Idle {
    /// Starts the periodic idle check of an actor.
    fn start<M: ractor::Message>(myself: &ActorRef<M>, idle: Duration, tick: fn() -> M) -> Idle {
        myself.send_interval(idle / 2 + Duration::from_millis(1), tick);
        Idle {
            idle,
            last_active: Instant::now(),
        }
    }

    /// Counts one handled operation off the actor's queue.
    fn handled(&mut self, queued: &AtomicUsize) {
        queued.fetch_sub(1, Ordering::AcqRel);
        self.last_active = Instant::now();
    }

    /// Stops the actor if it has been idle long enough and `live` retires it.
    async fn check<K: Clone + Eq + Hash, M: ractor::Message>(
        &self,
        myself: &ActorRef<M>,
        live: &Live<K, M>,
        key: &K,
        queued: &AtomicUsize,
    ) {
        if self.last_active.elapsed() >= self.idle && live.retire(key, queued).await {
            myself.stop(None);
        }
    }
}

/// Start-up arguments of a member actor.
#[derive(Debug, Clone)]
pub struct MemberArgs {
    pub member_id: Id,
    pub client: Arc<ScopeClient>,
    pub registry: Arc<MemberRegistry>,
    pub queued: Arc<AtomicUsize>,
}

/// The actor of one existing member (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberActor;

/// State of a member actor.
#[derive(Debug)]
pub struct MemberState {
    args: MemberArgs,
    idle: Idle,
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
        let idle = Idle::start(&myself, args.client.settings().member_idle, || {
            MemberMsg::Tick
        });
        Ok(MemberState { args, idle })
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        message: MemberMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        match message {
            MemberMsg::Op { org_id, op, reply } => {
                let member_id = args.member_id;
                let result = args
                    .client
                    .call(org_id, |reply| ScopeMsg::Mutate {
                        org_id,
                        member_id,
                        op: *op,
                        reply,
                    })
                    .await;
                state.idle.handled(&args.queued);
                let _ = reply.send(result);
            }
            MemberMsg::Tick => {
                let live = &args.registry.members;
                state
                    .idle
                    .check(&myself, live, &args.member_id, &args.queued)
                    .await;
            }
        }
        Ok(())
    }
}

/// Start-up arguments of an identity actor.
#[derive(Debug, Clone)]
pub struct IdentityArgs {
    pub identity: Identity,
    pub client: Arc<ScopeClient>,
    pub registry: Arc<MemberRegistry>,
    pub queued: Arc<AtomicUsize>,
}

/// The actor of one identity (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityActor;

/// State of an identity actor.
#[derive(Debug)]
pub struct IdentityState {
    args: IdentityArgs,
    idle: Idle,
}

impl Actor for IdentityActor {
    type Msg = IdentityMsg;
    type State = IdentityState;
    type Arguments = IdentityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IdentityMsg>,
        args: IdentityArgs,
    ) -> Result<IdentityState, ActorProcessingErr> {
        let idle = Idle::start(&myself, args.client.settings().member_idle, || {
            IdentityMsg::Tick
        });
        Ok(IdentityState { args, idle })
    }

    async fn handle(
        &self,
        myself: ActorRef<IdentityMsg>,
        message: IdentityMsg,
        state: &mut IdentityState,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        match message {
            IdentityMsg::Run(work) => {
                let handle = IdentityHandle {
                    identity: args.identity.clone(),
                    client: args.client.clone(),
                    registry: args.registry.clone(),
                };
                work(handle).await;
                state.idle.handled(&args.queued);
            }
            IdentityMsg::Tick => {
                let live = &args.registry.identities;
                state
                    .idle
                    .check(&myself, live, &args.identity, &args.queued)
                    .await;
            }
        }
        Ok(())
    }
}
