//! The scope supervisor: starts one scope actor per stored scope, routes by scope id, and
//! restarts a failed scope actor from the store. ractor neither restarts actors nor keeps their
//! mailbox, so callers of a failed actor see their reply port dropped (`Unavailable`) at once;
//! restarts are capped per time window, after which the scope is marked failed.
//!
//! A scope that fails while the store cannot write (its commit met a full disk or an I/O
//! error) is not restarted at once and does not count against the cap: its memory may hold the
//! batch that failed, and a load would read the failed database, which may still hold that
//! batch too. It waits until the store has reopened itself ([`Health::Ok`]), and is then
//! restarted from what is durable.
//!
//! [`SupervisorHandle`] is how the runtime and the services start and stop scopes. Above the
//! scope actor; it imports no service.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent,
};
use unify_storage::{Health, Id, Store};

use crate::error::OpError;
use crate::hub::Hub;
use crate::protocol::ScopeMsg;
use crate::scope::{Scope, ScopeArgs};
use crate::settings::Settings;
use crate::status::ScopeStatus;

/// A scope as the scope client sees it.
#[derive(Debug, Clone)]
pub struct ScopeEntry {
    /// `None` while the actor is stopped (restarting, failed, or being re-scoped).
    pub actor: Option<ActorRef<ScopeMsg>>,
    pub status: Arc<ScopeStatus>,
}

/// The routing table from scope id to actor, shared with the runtime.
#[derive(Debug, Default)]
pub struct Registry {
    scopes: RwLock<HashMap<Id, ScopeEntry>>,
}

impl Registry {
    pub fn get(&self, scope_id: Id) -> Option<ScopeEntry> {
        self.read().get(&scope_id).cloned()
    }

    /// Returns the ids and statuses of every known scope.
    pub fn statuses(&self) -> Vec<(Id, Arc<ScopeStatus>)> {
        self.read()
            .iter()
            .map(|(id, e)| (*id, e.status.clone()))
            .collect()
    }

    /// Returns the status of a scope, creating it if new; it outlives actor restarts.
    fn status(&self, scope_id: Id) -> Arc<ScopeStatus> {
        let mut scopes = self.write();
        scopes
            .entry(scope_id)
            .or_insert_with(|| ScopeEntry {
                actor: None,
                status: Arc::default(),
            })
            .status
            .clone()
    }

    /// Sets or clears the scope's actor; a cleared scope is not running, whatever its last
    /// actor managed to record (a panicking actor runs no `post_stop`).
    fn set_actor(&self, scope_id: Id, actor: Option<ActorRef<ScopeMsg>>) {
        if let Some(entry) = self.write().get_mut(&scope_id) {
            if actor.is_none() {
                entry.status.running.store(false, Ordering::Release);
            }
            entry.actor = actor;
        }
    }

    /// Returns whether every scope has a running actor and none failed.
    pub fn all_running(&self) -> bool {
        self.read().values().all(|e| {
            e.actor
                .as_ref()
                .is_some_and(|a| a.get_status() == ActorStatus::Running)
                && e.status.running.load(Ordering::Acquire)
                && !e.status.failed.load(Ordering::Acquire)
        })
    }

    fn remove(&self, scope_id: Id) {
        self.write().remove(&scope_id);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Id, ScopeEntry>> {
        self.scopes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Id, ScopeEntry>> {
        self.scopes.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Messages of the supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Starts (or restarts) the actor of a stored scope.
    Start {
        scope_id: Id,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Stops a scope's actor gracefully (its pending batch is committed); `forget` also drops
    /// the scope from the routing table (the scope was merged into another).
    Stop {
        scope_id: Id,
        forget: bool,
        reply: RpcReplyPort<()>,
    },
    /// Stops every scope's actor gracefully, one after the other (at shutdown: a supervisor
    /// that stops kills its children without their `post_stop`).
    StopAll { reply: RpcReplyPort<()> },
    /// The store can write again: restarts the scopes that wait for it.
    StoreRecovered,
}

/// Start-up arguments of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub registry: Arc<Registry>,
    pub hub: Hub,
}

/// The scope supervisor (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

/// State of the supervisor.
#[derive(Debug)]
pub struct SupervisorState {
    args: SupervisorArgs,
    /// Which scope each child actor serves.
    children: HashMap<ActorId, Id>,
    /// Recent restart times per scope, for the restart cap.
    restarts: HashMap<Id, VecDeque<Instant>>,
    /// Scopes being stopped on purpose: their termination is not a failure.
    stopping: HashSet<Id>,
    /// Scopes that failed while the store could not write, restarted once it can.
    waiting: HashSet<Id>,
    /// Sends [`SupervisorMsg::StoreRecovered`] whenever the store turns `Ok`.
    health_watch: tokio::task::JoinHandle<()>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let scopes = args.store.list_scopes()?;
        let health_watch = watch_health(&args.store, myself.clone());
        let mut state = SupervisorState {
            args,
            children: HashMap::new(),
            restarts: HashMap::new(),
            stopping: HashSet::new(),
            waiting: HashSet::new(),
            health_watch,
        };
        for scope in scopes {
            // A scope that cannot load is marked failed; the others still start.
            let _ = state.spawn(&myself, scope.id).await;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start { scope_id, reply } => {
                let result = state
                    .spawn(&myself, scope_id)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            SupervisorMsg::Stop {
                scope_id,
                forget,
                reply,
            } => {
                if let Some(actor) = state.args.registry.get(scope_id).and_then(|e| e.actor) {
                    state.stopping.insert(scope_id);
                    state.args.registry.set_actor(scope_id, None);
                    let _ = actor.stop_and_wait(None, None).await;
                }
                if forget {
                    state.args.registry.remove(scope_id);
                }
                let _ = reply.send(());
            }
            SupervisorMsg::StopAll { reply } => {
                let running: Vec<(Id, ActorRef<ScopeMsg>)> = state
                    .args
                    .registry
                    .read()
                    .iter()
                    .filter_map(|(&id, e)| e.actor.clone().map(|actor| (id, actor)))
                    .collect();
                // The routing table keeps them: the runtime is going away, and what they last
                // published still answers member reads until it has.
                for (scope_id, actor) in running {
                    state.stopping.insert(scope_id);
                    let _ = actor.stop_and_wait(None, None).await;
                }
                let _ = reply.send(());
            }
            SupervisorMsg::StoreRecovered => state.restart_waiting(&myself).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        state.health_watch.abort();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, state, reason) => {
                // A killed actor's state comes with the event; it holds the scope's commit
                // lane, which the next incarnation waits for: it goes before the restart.
                drop(state);
                (cell, reason)
            }
            _ => return Ok(()),
        };
        let Some(scope_id) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping.remove(&scope_id) {
            return Ok(());
        }
        state.args.registry.set_actor(scope_id, None);
        if state.args.store.health() == Health::Failed {
            tracing::warn!(scope_id, reason = ?failure,
                "scope actor stopped while the store cannot write, restarting it once it can");
            state.wait_for_store(scope_id);
            return Ok(());
        }
        tracing::warn!(scope_id, reason = ?failure, "scope actor stopped unexpectedly, restarting");
        if state.allow_restart(scope_id) {
            if let Err(err) = state.spawn(&myself, scope_id).await {
                tracing::error!(scope_id, error = %err, "scope restart failed");
            }
        } else {
            tracing::error!(scope_id, "scope restarted too often, marking it failed");
            state
                .args
                .registry
                .status(scope_id)
                .failed
                .store(true, Ordering::Release);
        }
        Ok(())
    }
}

impl SupervisorState {
    /// Spawns the scope's actor from the store; a scope that cannot load is marked failed.
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        scope_id: Id,
    ) -> Result<(), ActorProcessingErr> {
        let status = self.args.registry.status(scope_id);
        let args = ScopeArgs {
            scope_id,
            store: self.args.store.clone(),
            settings: self.args.settings.clone(),
            status: status.clone(),
            hub: self.args.hub.clone(),
        };
        match Actor::spawn_linked(None, Scope, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.children.insert(actor.get_id(), scope_id);
                status.failed.store(false, Ordering::Release);
                status.waiting_for_store.store(false, Ordering::Release);
                status.starts.fetch_add(1, Ordering::AcqRel);
                self.args.registry.set_actor(scope_id, Some(actor));
                Ok(())
            }
            Err(err) if self.args.store.health() == Health::Failed => {
                tracing::warn!(scope_id, error = %err,
                    "scope failed to start while the store cannot write, starting it once it can");
                self.wait_for_store(scope_id);
                Err(err.into())
            }
            Err(err) => {
                tracing::error!(scope_id, error = %err, "scope failed to start");
                status.failed.store(true, Ordering::Release);
                Err(err.into())
            }
        }
    }

    /// Leaves a scope stopped until the store can write again; its published view keeps
    /// answering reads meanwhile.
    fn wait_for_store(&mut self, scope_id: Id) {
        self.waiting.insert(scope_id);
        if let Some(entry) = self.args.registry.get(scope_id) {
            entry
                .status
                .waiting_for_store
                .store(true, Ordering::Release);
        }
    }

    /// Restarts, from the reopened store, every scope that failed while it could not write.
    async fn restart_waiting(&mut self, myself: &ActorRef<SupervisorMsg>) {
        for scope_id in std::mem::take(&mut self.waiting) {
            // A scope started, stopped or forgotten meanwhile stays as it is.
            let Some(entry) = self.args.registry.get(scope_id) else {
                continue;
            };
            entry
                .status
                .waiting_for_store
                .store(false, Ordering::Release);
            if entry.actor.is_some() {
                continue;
            }
            tracing::info!(scope_id, "the store writes again, restarting the scope");
            if let Err(err) = self.spawn(myself, scope_id).await {
                tracing::error!(scope_id, error = %err, "scope restart failed");
            }
        }
    }

    /// Records a restart and returns whether it is within the cap.
    fn allow_restart(&mut self, scope_id: Id) -> bool {
        let window = self.args.settings.restart_window;
        let times = self.restarts.entry(scope_id).or_default();
        let now = Instant::now();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            times.pop_front();
        }
        times.push_back(now);
        times.len() as u32 <= self.args.settings.restart_limit
    }
}

/// Returns a task that tells the supervisor each time the store turns `Ok` again; it ends
/// with the store or the supervisor.
fn watch_health(store: &Store, supervisor: ActorRef<SupervisorMsg>) -> tokio::task::JoinHandle<()> {
    let mut health = store.watch_health();
    tokio::spawn(async move {
        while health.changed().await.is_ok() {
            let ok = *health.borrow_and_update() == Health::Ok;
            if ok
                && supervisor
                    .send_message(SupervisorMsg::StoreRecovered)
                    .is_err()
            {
                return;
            }
        }
    })
}

/// The running supervisor: starts and stops scope actors on request.
#[derive(Debug)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SupervisorHandle {
    /// Spawns the supervisor, which starts every stored scope.
    pub async fn spawn(args: SupervisorArgs) -> Result<SupervisorHandle, OpError> {
        let (actor, task) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| OpError::Unavailable(format!("supervisor failed to start: {e}")))?;
        Ok(SupervisorHandle {
            actor,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// Starts (or restarts) the actor of a stored scope.
    pub async fn start_scope(&self, scope_id: Id) -> Result<(), OpError> {
        let started = self
            .actor
            .call(|reply| SupervisorMsg::Start { scope_id, reply }, None)
            .await;
        match started {
            Ok(ractor::rpc::CallResult::Success(Ok(()))) => Ok(()),
            Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(OpError::Unavailable(e)),
            _ => Err(OpError::Unavailable("the supervisor is not running".into())),
        }
    }

    /// Stops a scope's actor gracefully; `forget` also drops it from the routing table.
    pub async fn stop_scope(&self, scope_id: Id, forget: bool) {
        let _ = self
            .actor
            .call(
                |reply| SupervisorMsg::Stop {
                    scope_id,
                    forget,
                    reply,
                },
                None,
            )
            .await;
    }

    /// Stops the supervisor and its scope actors, and waits for it.
    pub async fn stop(&self) {
        let _ = self
            .actor
            .call(|reply| SupervisorMsg::StopAll { reply }, None)
            .await;
        self.actor.stop(None);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}
