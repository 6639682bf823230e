//! From the deployment sections to the backends' own options, and the backends opened. The
//! Pulsar and PostgreSQL halves are behind their cargo features; the file format is not, so
//! a build without them still reads (and can refuse, by name) a distributed file.

use super::sections::{EmbeddedDurability, EmbeddedSection};
use crate::store::sqlite::{Durability, OpenMode, SqliteStore, StoreOptions};
use crate::store::StoreError;

impl EmbeddedSection {
    /// The SQLite store's options; unset keys at [`StoreOptions::default`].
    ///
    /// ```
    /// use infinitic_runtime::config::{Config, Deployment};
    /// let config = Config::from_toml("[embedded]\npath = \"a.db\"\nbusy_timeout = \"2s\"", "a.toml", [])?;
    /// let Deployment::Embedded(embedded) = config.deployment() else { unreachable!() };
    /// assert_eq!(embedded.store_options().busy_timeout.as_secs(), 2);
    /// # Ok::<(), infinitic_runtime::config::ConfigError>(())
    /// ```
    pub fn store_options(&self) -> StoreOptions {
        let defaults = StoreOptions::default();
        StoreOptions {
            durability: match self.durability {
                None => defaults.durability,
                Some(EmbeddedDurability::Full) => Durability::Full,
                Some(EmbeddedDurability::FullBeforeVisible) => Durability::FullBeforeVisible,
            },
            busy_timeout: self.busy_timeout.unwrap_or(defaults.busy_timeout),
            ..defaults
        }
    }

    /// Opens the store at `path` (workers create it, clients need it to exist).
    pub fn open(&self, mode: OpenMode) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_options(&self.path, mode, self.store_options())
    }
}

#[cfg(feature = "pulsar")]
mod pulsar {
    use crate::config::PulsarSection;
    use crate::store::pulsar::{PulsarOptions, PulsarTransport};
    use crate::store::StoreError;

    impl PulsarSection {
        /// The transport's options; unset keys at [`PulsarOptions::new`]'s defaults.
        ///
        /// ```
        /// use infinitic_runtime::config::{Config, Deployment};
        /// let text = "[pulsar]\nurl = \"pulsar://b:6650\"\nsubscription = \"billing\"\n\
        ///             [postgres]\nurl = \"postgres://db/app\"";
        /// let env = [("INFINITIC_PULSAR_TOKEN".to_string(), "secret".to_string())];
        /// let config = Config::from_toml(text, "d.toml", env)?;
        /// let Deployment::Distributed { pulsar, .. } = config.deployment() else { unreachable!() };
        /// let options = pulsar.options();
        /// assert_eq!((options.subscription.as_str(), options.token.as_deref()), ("billing", Some("secret")));
        /// # Ok::<(), infinitic_runtime::config::ConfigError>(())
        /// ```
        pub fn options(&self) -> PulsarOptions {
            let defaults = PulsarOptions::new(self.url.clone());
            PulsarOptions {
                token: self.token.clone(),
                tls_ca: self.tls_ca.clone(),
                tls_allow_insecure: self
                    .tls_allow_insecure
                    .unwrap_or(defaults.tls_allow_insecure),
                subscription: self
                    .subscription
                    .clone()
                    .unwrap_or(defaults.subscription.clone()),
                namespace: self.namespace.clone().unwrap_or(defaults.namespace.clone()),
                topic_prefix: self
                    .topic_prefix
                    .clone()
                    .unwrap_or(defaults.topic_prefix.clone()),
                startup_timeout: self.startup_timeout.unwrap_or(defaults.startup_timeout),
                operation_timeout: self.operation_timeout.unwrap_or(defaults.operation_timeout),
                max_pending_sends: self.max_pending_sends.unwrap_or(defaults.max_pending_sends),
                receive_buffer: self.receive_buffer.unwrap_or(defaults.receive_buffer),
                broker_max_message_bytes: self
                    .broker_max_message_bytes
                    .unwrap_or(defaults.broker_max_message_bytes),
                ..defaults
            }
        }

        /// Connects the transport ([`PulsarTransport::connect`] with [`Self::options`]).
        pub async fn connect(&self) -> Result<PulsarTransport, StoreError> {
            PulsarTransport::connect(self.options()).await
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use crate::config::PostgresSection;
    use crate::store::postgres::{PostgresOptions, PostgresStore, PostgresTls};
    use crate::store::StoreError;

    impl PostgresSection {
        /// The store's options; unset keys at [`PostgresOptions::default`]. TLS is required
        /// when `tls = true` or a `ca_file` is given.
        ///
        /// ```
        /// use infinitic_runtime::config::{Config, Deployment};
        /// use infinitic_runtime::store::postgres::PostgresTls;
        /// let text = "[pulsar]\nurl = \"pulsar://b:6650\"\n\
        ///             [postgres]\nurl = \"postgres://db/app\"\nca_file = \"ca.pem\"";
        /// let config = Config::from_toml(text, "d.toml", [])?;
        /// let Deployment::Distributed { postgres, .. } = config.deployment() else { unreachable!() };
        /// assert_eq!(postgres.options().tls, PostgresTls::Required { ca_file: Some("ca.pem".into()) });
        /// # Ok::<(), infinitic_runtime::config::ConfigError>(())
        /// ```
        pub fn options(&self) -> PostgresOptions {
            let defaults = PostgresOptions::default();
            let tls = match (self.tls, &self.ca_file) {
                (Some(true), ca_file) | (None, ca_file @ Some(_)) => PostgresTls::Required {
                    ca_file: ca_file.clone(),
                },
                _ => PostgresTls::Disabled,
            };
            PostgresOptions {
                schema: self.schema.clone().unwrap_or(defaults.schema.clone()),
                tls,
                readers: self.readers.unwrap_or(defaults.readers),
                connect_timeout: self.connect_timeout.unwrap_or(defaults.connect_timeout),
                consumed_retention: self
                    .consumed_retention
                    .unwrap_or(defaults.consumed_retention),
                max_batch: self.max_batch.unwrap_or(defaults.max_batch),
                outbox_claim: self.outbox_claim.unwrap_or(defaults.outbox_claim),
                timer_grace: self.timer_grace.unwrap_or(defaults.timer_grace),
            }
        }

        /// Connects the store ([`PostgresStore::connect`] on `url` with [`Self::options`]).
        pub async fn connect(&self) -> Result<PostgresStore, StoreError> {
            PostgresStore::connect(&self.url, self.options()).await
        }
    }
}
