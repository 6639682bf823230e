// Workflow trait signature shapes: several methods on one trait, no arguments, many
// arguments, unit return, custom types. Each method is started through the stub.
use infinitic::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    Free,
    Paid { seats: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub email: String,
    pub plan: Plan,
    pub tags: BTreeSet<String>,
}

#[workflow]
pub trait Accounts {
    async fn version(&self) -> u32;
    async fn noop(&self);
    async fn open(
        &self,
        email: String,
        plan: Plan,
        tags: Vec<String>,
        trial: Option<u32>,
    ) -> Account;
    async fn count(&self, accounts: BTreeMap<String, Account>) -> usize;
}

#[derive(Default)]
pub struct AccountsImpl;

#[workflow]
impl Accounts for AccountsImpl {
    async fn version(&self) -> u32 {
        3
    }

    async fn noop(&self) {}

    async fn open(
        &self,
        email: String,
        plan: Plan,
        tags: Vec<String>,
        trial: Option<u32>,
    ) -> Account {
        let mut tags: BTreeSet<String> = tags.into_iter().collect();
        if trial.is_some() {
            tags.insert("trial".into());
        }
        Account { email, plan, tags }
    }

    async fn count(&self, accounts: BTreeMap<String, Account>) -> usize {
        accounts.values().filter(|a| a.plan != Plan::Free).count()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(AccountsStub::NAME, "Accounts");
    assert_eq!(AccountsStub::METHODS, ["version", "noop", "open", "count"]);

    let t = WorkflowTester::new;
    let version = t()
        .run(AccountsImpl::default, AccountsStub.version())
        .await
        .expect("completes");
    assert_eq!(version.output, 3);

    let noop = t()
        .run(AccountsImpl::default, AccountsStub.noop())
        .await
        .expect("completes");
    let () = noop.output;

    let call = AccountsStub.open(
        "ada@example.com".into(),
        Plan::Paid { seats: 5 },
        vec!["vip".into()],
        Some(14),
    );
    let account = t()
        .run(AccountsImpl::default, call)
        .await
        .expect("completes")
        .output;
    assert_eq!(account.plan, Plan::Paid { seats: 5 });
    assert_eq!(account.tags.iter().collect::<Vec<_>>(), ["trial", "vip"]);

    let mut accounts = BTreeMap::new();
    accounts.insert("ada".to_string(), account.clone());
    accounts.insert(
        "bob".to_string(),
        Account {
            plan: Plan::Free,
            ..account
        },
    );
    let count = t()
        .run(AccountsImpl::default, AccountsStub.count(accounts))
        .await
        .expect("completes");
    assert_eq!(count.output, 1);
}
