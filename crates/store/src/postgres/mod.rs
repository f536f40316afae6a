#![allow(unused_variables)] // placeholder until the PostgreSQL store lands
//! The PostgreSQL store (scale-out): several `cistern serve` nodes share one database.

use async_trait::async_trait;

use crate::*;

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    _pool: sqlx::PgPool,
}

impl PgStore {
    /// Connects, applies migrations and ensures the default tenant.
    pub async fn open(url: &str, _settings: &StoreSettings) -> Result<Self, StoreError> {
        let pool = sqlx::PgPool::connect(url).await?;
        Ok(Self { _pool: pool })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn create_tenant(&self, slug: &str, strict: bool) -> Result<Tenant, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn tenant_by_slug(&self, slug: &str) -> Result<Option<Tenant>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn tenant_by_id(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn set_tenant_strict(&self, tenant_id: &str, strict: bool) -> Result<(), StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKeyInfo, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        id_or_name: &str,
    ) -> Result<ApiKeyInfo, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn list_runs(
        &self,
        tenant_id: &str,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<cistern_core::Run>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn get_run(
        &self,
        tenant_id: &str,
        run_id: &str,
    ) -> Result<Option<cistern_core::Run>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn list_pipelines(&self, tenant_id: &str) -> Result<Vec<PipelineSummary>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn list_instances(&self, tenant_id: &str) -> Result<Vec<Instance>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn list_events(
        &self,
        tenant_id: &str,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<EventView>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }

    async fn get_event(
        &self,
        tenant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventView>, StoreError> {
        Err(StoreError::Backend("PostgreSQL store not built yet".into()))
    }
}
