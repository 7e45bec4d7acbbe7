//! etcd's `Auth` service: users, roles and key permissions, kept by the storage crate's auth
//! table (`raftkv_storage::mvcc::auth`) and changed only through the log.
//!
//! Passwords are hashed here, at the API edge, with bcrypt at etcd's cost before the change is
//! proposed, so no log entry holds a plaintext password. Reads (UserGet, UserList, RoleGet,
//! RoleList), which etcd 3.4 sends through its log, are linearizable reads of the table.
//!
//! Not yet: permission checks on the KV, Watch, Lease and other calls, and tokens. Until they
//! exist, AuthEnable is refused (after etcd's own checks, so a missing root user or role gets
//! etcd's answer), and Authenticate answers as etcd does while auth is off: nothing may claim
//! a protection it does not give.

use raftkv_proto::authpb::UserAddOptions;
use raftkv_proto::etcdserverpb::auth_server::Auth;
use raftkv_proto::etcdserverpb::*;
use raftkv_proto::raftkvpb::{
    AuthCommand, AuthUserAdd, AuthUserChangePassword, Command, auth_command, command,
    command_response,
};
use raftkv_raft::NodeError;
use raftkv_raft::error::EtcdError;
use raftkv_storage::MvccError;
use raftkv_storage::mvcc::auth::{AuthTable, ROOT, SharedAuth};
use raftkv_storage::mvcc::validate;
use tonic::{Request, Response, Status};

use crate::api::EtcdApi;

/// etcd's bcrypt cost (`bcrypt.DefaultCost`, what etcd 3.4 hashes passwords with).
pub const BCRYPT_COST: u32 = 10;

type Answer<T> = Result<Response<T>, Status>;

impl EtcdApi {
    /// Proposes one auth change; the header of its answer.
    async fn auth_write(&self, op: auth_command::Op) -> Result<Option<ResponseHeader>, NodeError> {
        if self.node().is_learner() {
            return Err(NodeError::Etcd(EtcdError::LearnerRpc));
        }
        let cmd = Command {
            op: Some(command::Op::Auth(AuthCommand { op: Some(op) })),
        };
        let config = self.node().config();
        validate::check_command(&cmd, config.max_request_bytes, config.max_txn_ops)
            .map_err(NodeError::from)?;
        match self.node().write(cmd).await?.op {
            Some(command_response::Op::Auth(r)) => {
                let revision = r.header.map_or(0, |h| h.revision);
                Ok(self.header(revision))
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

/// bcrypt of `password` at etcd's cost, off the async threads (it takes tens of ms).
async fn hash_password(password: String) -> Result<bytes::Bytes, NodeError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(NodeError::internal)?
        .map(|h| bytes::Bytes::from(h.into_bytes()))
        .map_err(NodeError::internal)
}

fn status(e: impl Into<NodeError>) -> Status {
    Status::from(e.into())
}

#[tonic::async_trait]
impl Auth for EtcdApi {
    /// etcd's checks (root user, root role) answer as etcd's; a request that passes them is
    /// refused, since permissions are not enforced yet (see the module docs).
    async fn auth_enable(&self, _: Request<AuthEnableRequest>) -> Answer<AuthEnableResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
        if table.enabled {
            return Ok(Response::new(AuthEnableResponse { header }));
        }
        let root = table
            .users
            .get(ROOT)
            .ok_or_else(|| status(MvccError::RootUserNotExist))?;
        if !AuthTable::has_root_role(root) {
            return Err(status(MvccError::RootRoleNotExist));
        }
        Err(status(MvccError::AuthEnableUnsupported))
    }

    async fn auth_disable(&self, _: Request<AuthDisableRequest>) -> Answer<AuthDisableResponse> {
        let op = auth_command::Op::Disable(AuthDisableRequest {});
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    /// Auth cannot be on yet, so this is etcd's answer while it is off.
    async fn authenticate(&self, _: Request<AuthenticateRequest>) -> Answer<AuthenticateResponse> {
        let (table, _) = self.auth_read().await.map_err(status)?;
        if !table.enabled {
            return Err(status(MvccError::AuthNotEnabled));
        }
        Err(status(MvccError::AuthEnableUnsupported))
    }

    async fn user_add(&self, req: Request<AuthUserAddRequest>) -> Answer<AuthUserAddResponse> {
        let req = req.into_inner();
        if req.name.is_empty() {
            return Err(status(MvccError::UserEmpty));
        }
        let no_password = req.options.is_some_and(|o| o.no_password);
        let hashed_password = if no_password {
            bytes::Bytes::new()
        } else {
            hash_password(req.password).await.map_err(status)?
        };
        let op = auth_command::Op::UserAdd(AuthUserAdd {
            name: req.name,
            hashed_password,
            options: Some(req.options.unwrap_or(UserAddOptions { no_password })),
        });
        let header = self.auth_write(op).await.map_err(status)?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(&self, req: Request<AuthUserGetRequest>) -> Answer<AuthUserGetResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
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
        let hashed_password = hash_password(req.password).await.map_err(status)?;
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

    async fn role_get(&self, req: Request<AuthRoleGetRequest>) -> Answer<AuthRoleGetResponse> {
        let (table, header) = self.auth_read().await.map_err(status)?;
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
