//! etcd's `Auth` service: users, roles and key permissions, kept by the storage crate's auth
//! table (`raftkv_storage::mvcc::auth`) and changed only through the log.
//!
//! Passwords are hashed here, at the API edge, with bcrypt at etcd's cost before the change is
//! proposed, so no log entry holds a plaintext password. Reads (UserGet, UserList, RoleGet,
//! RoleList), which etcd 3.4 sends through its log, are linearizable reads of the table.
//!
//! Tokens come from the provider `--auth-token` chose (`crate::token_provider`): simple
//! tokens are made by the Authenticate entry on every member; a JWT is signed by the member
//! that handled Authenticate once the entry applied, and checked by any member with its key.

use std::time::SystemTime;

use raftkv_proto::authpb::UserAddOptions;
use raftkv_proto::etcdserverpb::auth_server::Auth;
use raftkv_proto::etcdserverpb::*;
use raftkv_proto::raftkvpb::Caller;
use raftkv_proto::raftkvpb::{
    AuthAuthenticate, AuthCommand, AuthUserAdd, AuthUserChangePassword, Command, auth_command,
    command, command_response,
};
use raftkv_raft::NodeError;
use raftkv_raft::error::EtcdError;
use raftkv_raft::types::{Refusal, RefusalCode};
use raftkv_storage::MvccError;
use raftkv_storage::mvcc::auth::tokens;
use raftkv_storage::mvcc::auth::{AuthTable, SharedAuth};
use raftkv_storage::mvcc::validate;
use tonic::{Request, Response, Status};

use crate::api::EtcdApi;
use crate::caller::{self, Credentials};
use crate::token_provider::TokenProvider;

/// etcd's bcrypt cost (`bcrypt.DefaultCost`, what etcd 3.4 hashes passwords with).
pub const BCRYPT_COST: u32 = 10;

type Answer<T> = Result<Response<T>, Status>;

/// etcd's `AuthInfoFromCtx` and the checks the API edge makes (reads served here, and the
/// calls etcd keeps for root); writes are checked where they are applied (see
/// `raftkv_storage::mvcc::auth::permit`).
impl EtcdApi {
    /// The caller of the request being served: the user of its token (waiting, as etcd
    /// does, until this member has applied the entry that made the token), else the
    /// certificate's common name where that counts, else `None`. An unknown token is
    /// etcd's "invalid auth token", whether auth is on or not.
    pub async fn auth_info(&self) -> Result<Option<Caller>, NodeError> {
        self.auth_info_of(&caller::current()).await
    }

    /// [`EtcdApi::auth_info`] for `credentials` taken earlier (a stream's).
    pub async fn auth_info_of(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Caller>, NodeError> {
        if let Some(index) = credentials
            .token
            .as_deref()
            .filter(|t| t.len() <= caller::MAX_TOKEN_BYTES && self.token_provider().is_simple())
            .and_then(tokens::token_index)
        {
            // A token made on another member works here once this member has applied it;
            // one that never comes is invalid after the wait.
            let _ = self.node().wait_applied(index).await;
        }
        self.auth_info_now(credentials).map_err(NodeError::from)
    }

    /// [`EtcdApi::auth_info_of`] without waiting for the token's entry. A simple token's
    /// caller is at the member's auth revision; a JWT's at the revision it was made at
    /// (so a token older than the auth store's last change is refused as stale, as
    /// etcd refuses it).
    pub fn auth_info_now(&self, credentials: &Credentials) -> Result<Option<Caller>, MvccError> {
        let store = self.node().store();
        if let Some(token) = &credentials.token {
            if token.len() > caller::MAX_TOKEN_BYTES {
                return Err(MvccError::InvalidAuthToken);
            }
            return match self.token_provider() {
                TokenProvider::Simple => {
                    let user = store
                        .tokens()
                        .user(token)
                        .ok_or(MvccError::InvalidAuthToken)?;
                    Ok(Some(Caller {
                        user,
                        auth_revision: store.auth().revision,
                    }))
                }
                TokenProvider::Jwt(jwt) => match jwt.info(token, SystemTime::now()) {
                    Ok(claims) => Ok(Some(Caller {
                        user: claims.username,
                        auth_revision: claims.revision,
                    })),
                    Err(why) => {
                        tracing::debug!(why, "failed to parse jwt token");
                        Err(MvccError::InvalidAuthToken)
                    }
                },
                TokenProvider::Nop => Err(MvccError::InvalidAuthToken),
            };
        }
        Ok(credentials.common_name.as_ref().map(|cn| Caller {
            user: cn.clone(),
            auth_revision: store.auth().revision,
        }))
    }

    /// The caller a command carries: a client without credentials is the empty user at
    /// auth revision 0 (what etcd's request header holds for it).
    pub async fn command_caller(&self) -> Result<Caller, NodeError> {
        Ok(self.auth_info().await?.unwrap_or_default())
    }

    /// etcd's `IsAdminPermitted` for the caller (maintenance, member and auth reads).
    pub async fn require_admin(&self) -> Result<(), NodeError> {
        let table = self.node().store().auth();
        if !table.enabled && caller::current().token.is_none() {
            return Ok(());
        }
        let caller = self.auth_info().await?.unwrap_or_default();
        self.node()
            .store()
            .auth()
            .check_admin(&caller)
            .map_err(NodeError::from)
    }

    /// etcd's `authMaintenanceServer.isAuthenticated` (Defragment, Snapshot, Hash,
    /// HashKV): [`EtcdApi::require_admin`], with its refusal sent as etcd sends it there,
    /// untranslated: code Unknown and the auth package's own text ("auth: permission
    /// denied").
    pub async fn require_admin_maintenance(&self) -> Result<(), NodeError> {
        self.require_admin().await.map_err(|e| match e {
            NodeError::Refused(r) => NodeError::Refused(Refusal {
                code: RefusalCode::Unknown,
                message: if r.message == MvccError::UserNotFound.to_string() {
                    "auth: user not found".to_string()
                } else {
                    r.message.replacen("etcdserver: ", "auth: ", 1)
                },
            }),
            other => other,
        })
    }

    /// etcd's `doSerialize` before a read served by this member: `check` the caller against
    /// the auth table now. Returns the auth revision to hold the answer to
    /// ([`EtcdApi::read_still_valid`]).
    pub async fn read_permit(
        &self,
        check: impl FnOnce(&AuthTable, &Caller) -> Result<(), MvccError>,
    ) -> Result<u64, NodeError> {
        let credentials = caller::current();
        if credentials.token.is_none() && credentials.common_name.is_none() {
            // The common case: nobody named. Allowed exactly when auth is off.
            let table = self.node().store().auth();
            if !table.enabled {
                return Ok(0);
            }
            check(&table, &Caller::default()).map_err(NodeError::from)?;
            return Ok(0);
        }
        let caller = self.auth_info_of(&credentials).await?;
        let table = self.node().store().auth();
        check(&table, caller.as_ref().unwrap_or(&Caller::default())).map_err(NodeError::from)?;
        Ok(caller.map_or(0, |c| c.auth_revision))
    }

    /// After a read: refused with "revision of auth store is old" if the auth store changed
    /// since [`EtcdApi::read_permit`] let it through (etcd's `doSerialize`).
    pub fn read_still_valid(&self, auth_revision: u64) -> Result<(), NodeError> {
        if auth_revision != 0 && auth_revision != self.node().store().auth().revision {
            return Err(NodeError::from(MvccError::AuthOldRevision));
        }
        Ok(())
    }

    /// Proposes one auth change; the header of its answer.
    async fn auth_write(&self, op: auth_command::Op) -> Result<Option<ResponseHeader>, NodeError> {
        Ok(self.auth_write_answer(op).await?.0)
    }

    /// Proposes one auth change; the header of its answer, and the token it made.
    async fn auth_write_answer(
        &self,
        op: auth_command::Op,
    ) -> Result<(Option<ResponseHeader>, String), NodeError> {
        if self.node().is_learner() {
            return Err(NodeError::Etcd(EtcdError::LearnerRpc));
        }
        let cmd = Command {
            op: Some(command::Op::Auth(AuthCommand { op: Some(op) })),
            caller: Some(self.command_caller().await?),
        };
        let config = self.node().config();
        validate::check_command(&cmd, config.max_request_bytes, config.max_txn_ops)
            .map_err(NodeError::from)?;
        match self.node().write(cmd).await?.op {
            Some(command_response::Op::Auth(r)) => {
                let revision = r.header.map_or(0, |h| h.revision);
                Ok((self.header(revision), r.token))
            }
            other => Err(NodeError::internal(format!(
                "an auth change answered {other:?}"
            ))),
        }
    }

    /// The auth table after a linearizable read barrier, with the header to answer with.
    async fn auth_read(&self) -> Result<(SharedAuth, Option<ResponseHeader>), NodeError> {
        if self.node().is_learner() {
            return Err(NodeError::Etcd(EtcdError::LearnerRpc));
        }
        self.node().read_barrier().await?;
        let store = self.node().store();
        Ok((store.auth(), self.header(store.revision())))
    }
}

impl EtcdApi {
    /// The token Authenticate answers with once its entry applied: the simple token the
    /// entry made, a JWT signed now, or etcd's refusal (a verify-only JWT member; no
    /// token provider).
    fn made_token(&self, simple: String, user: &str, revision: u64) -> Result<String, NodeError> {
        match self.token_provider() {
            TokenProvider::Simple => Ok(simple),
            TokenProvider::Jwt(jwt) => {
                jwt.assign(user, revision, SystemTime::now())
                    .map_err(|message| {
                        // etcd answers an error its table does not know as code Unknown.
                        NodeError::Refused(Refusal {
                            code: RefusalCode::Unknown,
                            message,
                        })
                    })
            }
            TokenProvider::Nop => Err(MvccError::AuthFailed.into()),
        }
    }
}

/// bcrypt of `password` at etcd's cost, off the async threads (it takes tens of ms).
async fn hash_password(password: String, cost: u32) -> Result<bytes::Bytes, NodeError> {
    let _turn = bcrypt_turn().await?;
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(NodeError::internal)?
        .map(|h| bytes::Bytes::from(h.into_bytes()))
        .map_err(NodeError::internal)
}

/// A turn at bcrypt: at most one hash or check per core at a time, so a flood of
/// Authenticate calls (each costs tens of milliseconds of CPU, and anyone may send them)
/// queues behind the cores instead of filling the blocking pool and starving the member.
async fn bcrypt_turn() -> Result<tokio::sync::SemaphorePermit<'static>, NodeError> {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            tokio::sync::Semaphore::new(cores)
        })
        .acquire()
        .await
        .map_err(NodeError::internal)
}

/// etcd's `CheckPassword`: the auth revision the password was checked at.
async fn check_password(table: SharedAuth, name: &str, password: &str) -> Result<u64, NodeError> {
    if !table.enabled {
        return Err(MvccError::AuthNotEnabled.into());
    }
    let user = table.users.get(name).ok_or(MvccError::AuthFailed)?;
    if user.options.is_some_and(|o| o.no_password) {
        return Err(MvccError::NoPasswordUser.into());
    }
    let hash = String::from_utf8_lossy(&user.password).into_owned();
    let password = password.to_string();
    let _turn = bcrypt_turn().await?;
    let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
        .await
        .map_err(NodeError::internal)?
        .unwrap_or(false);
    if !matches {
        tracing::info!(user = name, "invalid password");
        return Err(MvccError::AuthFailed.into());
    }
    Ok(table.revision)
}

/// etcd's simple-token prefix: 16 letters drawn uniformly from a cryptographic source.
fn token_prefix() -> String {
    use ring::rand::SecureRandom;
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    // Bytes below 4 × 52 map onto the letters evenly; the rest are drawn again.
    const LIMIT: u8 = 4 * 52;
    let rng = ring::rand::SystemRandom::new();
    let mut prefix = String::with_capacity(16);
    let mut random = [0u8; 32];
    while prefix.len() < 16 {
        rng.fill(&mut random).expect("the system's random source");
        for &b in random.iter().filter(|&&b| b < LIMIT) {
            if prefix.len() < 16 {
                prefix.push(char::from(LETTERS[usize::from(b) % LETTERS.len()]));
            }
        }
    }
    prefix
}

fn status(e: impl Into<NodeError>) -> Status {
    Status::from(e.into())
}

#[tonic::async_trait]
impl Auth for EtcdApi {
    /// Through the log; every member checks the root user and role as it applies it (and,
    /// with auth already on, that the caller is root).
    async fn auth_enable(&self, _: Request<AuthEnableRequest>) -> Answer<AuthEnableResponse> {
        let op = auth_command::Op::Enable(AuthEnableRequest {});
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(&self, _: Request<AuthDisableRequest>) -> Answer<AuthDisableResponse> {
        let op = auth_command::Op::Disable(AuthDisableRequest {});
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    /// etcd's `Authenticate`: the password checked here against the table after a
    /// linearizable barrier, then an entry naming the user (and, for simple tokens, a
    /// random token prefix, from which every member applying it makes the token); again if
    /// the auth store changed meanwhile. A JWT is signed here once the entry has applied,
    /// at the auth revision the password was checked at.
    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Answer<AuthenticateResponse> {
        let req = req.into_inner();
        loop {
            let (table, _) = self.auth_read().await.map_err(status)?;
            let checked = check_password(table, &req.name, &req.password)
                .await
                .map_err(status)?;
            let simple = self.token_provider().is_simple();
            let op = auth_command::Op::Authenticate(AuthAuthenticate {
                name: req.name.clone(),
                token_prefix: if simple {
                    token_prefix()
                } else {
                    String::new()
                },
            });
            let (header, token) = self.auth_write_answer(op).await.map_err(status)?;
            if checked == self.node().store().auth().revision {
                let token = self.made_token(token, &req.name, checked).map_err(status)?;
                return Ok(Response::new(AuthenticateResponse { header, token }));
            }
            tracing::info!("revision when password checked became stale; retrying");
        }
    }

    async fn user_add(&self, req: Request<AuthUserAddRequest>) -> Answer<AuthUserAddResponse> {
        let req = req.into_inner();
        // Checked again as the entry applies; here too, so only root makes this member
        // spend a bcrypt hash.
        self.require_admin().await.map_err(status)?;
        if req.name.is_empty() {
            return Err(status(MvccError::UserEmpty));
        }
        let no_password = req.options.is_some_and(|o| o.no_password);
        let hashed_password = if no_password {
            bytes::Bytes::new()
        } else {
            hash_password(req.password, self.bcrypt_cost())
                .await
                .map_err(status)?
        };
        let op = auth_command::Op::UserAdd(AuthUserAdd {
            name: req.name,
            hashed_password,
            options: Some(req.options.unwrap_or(UserAddOptions { no_password })),
        });
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    /// For root, or for the user asking about itself (etcd's `authApplierV3.UserGet`).
    async fn user_get(&self, req: Request<AuthUserGetRequest>) -> Answer<AuthUserGetResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
        let caller = self.command_caller().await.map_err(status)?;
        if let Err(e) = table.check_admin(&caller)
            && req.get_ref().name != caller.user
        {
            return Err(status(e));
        }
        let user = table
            .users
            .get(&req.get_ref().name)
            .ok_or_else(|| status(MvccError::UserNotFound))?;
        Ok(Response::new(AuthUserGetResponse {
            header,
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(&self, _: Request<AuthUserListRequest>) -> Answer<AuthUserListResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
        let caller = self.command_caller().await.map_err(status)?;
        table.check_admin(&caller).map_err(status)?;
        Ok(Response::new(AuthUserListResponse {
            header,
            users: table.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Answer<AuthUserDeleteResponse> {
        let op = auth_command::Op::UserDelete(req.into_inner());
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Answer<AuthUserChangePasswordResponse> {
        let req = req.into_inner();
        self.require_admin().await.map_err(status)?;
        let hashed_password = hash_password(req.password, self.bcrypt_cost())
            .await
            .map_err(status)?;
        let op = auth_command::Op::UserChangePassword(AuthUserChangePassword {
            name: req.name,
            hashed_password,
        });
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Answer<AuthUserGrantRoleResponse> {
        let op = auth_command::Op::UserGrantRole(req.into_inner());
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Answer<AuthUserRevokeRoleResponse> {
        let op = auth_command::Op::UserRevokeRole(req.into_inner());
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(&self, req: Request<AuthRoleAddRequest>) -> Answer<AuthRoleAddResponse> {
        let op = auth_command::Op::RoleAdd(req.into_inner());
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    /// For root, or for a user holding the role (etcd's `authApplierV3.RoleGet`).
    async fn role_get(&self, req: Request<AuthRoleGetRequest>) -> Answer<AuthRoleGetResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
        let caller = self.command_caller().await.map_err(status)?;
        if let Err(e) = table.check_admin(&caller)
            && !table.has_role(&caller.user, &req.get_ref().role)
        {
            return Err(status(e));
        }
        let role = table
            .roles
            .get(&req.get_ref().role)
            .ok_or_else(|| status(MvccError::RoleNotFound))?;
        Ok(Response::new(AuthRoleGetResponse {
            header,
            perm: role.key_permission.clone(),
        }))
    }

    async fn role_list(&self, _: Request<AuthRoleListRequest>) -> Answer<AuthRoleListResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
        let caller = self.command_caller().await.map_err(status)?;
        table.check_admin(&caller).map_err(status)?;
        Ok(Response::new(AuthRoleListResponse {
            header,
            roles: table.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Answer<AuthRoleDeleteResponse> {
        let op = auth_command::Op::RoleDelete(req.into_inner());
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Answer<AuthRoleGrantPermissionResponse> {
        let req = req.into_inner();
        // etcd dereferences the permission without a check; a request without one is
        // answered as a malformed one here rather than taken as an empty READ.
        if req.perm.is_none() {
            return Err(status(MvccError::BadAuth));
        }
        let op = auth_command::Op::RoleGrantPermission(req);
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Answer<AuthRoleRevokePermissionResponse> {
        let op = auth_command::Op::RoleRevokePermission(req.into_inner());
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
