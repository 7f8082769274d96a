//! Member actors: spawned on demand, stopped when idle. Every mutation of one member passes
//! through its actor, which forwards one operation at a time to the scope and waits for the
//! durable answer, so operations on one member apply in arrival order even when some of them
//! do slow work first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Mutex;
use unify_storage::{Id, Member};

use crate::error::OpError;
use crate::ops::MemberOp;
use crate::router::Router;
use crate::scope::ScopeMsg;

/// Messages of a member actor.
#[derive(Debug)]
pub enum MemberMsg {
    Op {
        org_id: Id,
        op: Box<MemberOp>,
        reply: RpcReplyPort<Result<Option<Member>, OpError>>,
    },
    /// Periodic idle check.
    Tick,
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
    running: Mutex<HashMap<Id, Running>>,
}

impl MemberRegistry {
    /// Returns the number of operations queued or running for the member.
    pub async fn queued(&self, member_id: Id) -> usize {
        self.running
            .lock()
            .await
            .get(&member_id)
            .map_or(0, |r| r.queued.load(Ordering::Acquire))
    }

    /// Sends an operation to the member's actor (spawning it if needed) and waits for the answer.
    pub async fn send(
        self: &Arc<Self>,
        router: &Arc<Router>,
        member_id: Id,
        org_id: Id,
        op: MemberOp,
    ) -> Result<Option<Member>, OpError> {
        let running = {
            let mut map = self.running.lock().await;
            let running = match map.get(&member_id) {
                Some(r) => r.clone(),
                None => {
                    let queued = Arc::new(AtomicUsize::new(0));
                    let args = MemberArgs {
                        member_id,
                        router: router.clone(),
                        registry: self.clone(),
                        queued: queued.clone(),
                    };
                    let (actor, _) = Actor::spawn(None, MemberActor, args)
                        .await
                        .map_err(|e| OpError::Unavailable(format!("member actor: {e}")))?;
                    let r = Running { actor, queued };
                    map.insert(member_id, r.clone());
                    r
                }
            };
            running.queued.fetch_add(1, Ordering::AcqRel);
            running
        };
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

    /// Removes the member's actor if nothing is queued; returns whether it was removed.
    async fn retire(&self, member_id: Id, queued: &AtomicUsize) -> bool {
        let mut map = self.running.lock().await;
        if queued.load(Ordering::Acquire) == 0 {
            map.remove(&member_id);
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
    pub member_id: Id,
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
                let member_id = state.args.member_id;
                let router = &state.args.router;
                let result = match router.scope_of(org_id) {
                    Ok(scope_id) => {
                        router
                            .call(scope_id, |reply| ScopeMsg::Mutate {
                                org_id,
                                member_id,
                                op: *op,
                                reply,
                            })
                            .await
                    }
                    Err(e) => Err(e),
                };
                state.args.queued.fetch_sub(1, Ordering::AcqRel);
                state.last_active = Instant::now();
                let _ = reply.send(result);
            }
            MemberMsg::Tick => {
                let idle = state.args.router.settings.member_idle;
                if state.last_active.elapsed() >= idle
                    && state
                        .args
                        .registry
                        .retire(state.args.member_id, &state.args.queued)
                        .await
                {
                    myself.stop(None);
                }
            }
        }
        Ok(())
    }
}
