//! Bad input at the edges: generated service dispatchers and workflow definitions turn unknown
//! methods, undecodable arguments, panics and service errors into typed errors (never a crash),
//! and a workflow sees each as a typed `StepError`.

use infinitic::prelude::*;
use infinitic::status::Waiting;
use infinitic::{
    decode, encode, replay, DispatchError, History, MethodRun, RetryPolicy, Service, Start, Status,
    StepOutcome, TaskError, TesterError, Timestamp, WorkflowCall, WorkflowDefinition, WorkflowId,
    WorkflowInstance,
};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

// ------------------------------------------------------------------------------------------
// Services
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountError {
    Insufficient { available: u64, requested: u64 },
    Frozen(String),
}

#[service]
pub trait Accounts {
    async fn balance(&self, account: String) -> u64;
    async fn withdraw(&self, account: String, amount: u64) -> Result<u64, AccountError>;
    /// Panics (with a non-string payload when `why` is empty).
    async fn explode(&self, why: String) -> u64;
    /// How many calls this implementation value has served.
    async fn calls(&self) -> u64;
}

/// The next version of `Accounts`, as a workflow built against it sees it: one argument type
/// changed, one method added. Workers still run the old one.
#[service(name = "Accounts")]
pub trait AccountsV2 {
    async fn balance(&self, account: u64) -> u64;
    async fn close(&self, account: String) -> bool;
}

/// A service no test registers with the tester.
#[service(name = "Ledger")]
pub trait LedgerService {
    async fn record(&self, entry: String) -> u64;
}

#[derive(Default)]
struct Bank {
    calls: AtomicU64,
}

impl Bank {
    fn count(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Accounts for Bank {
    async fn balance(&self, account: String) -> u64 {
        self.count();
        account.len() as u64 * 100
    }

    async fn withdraw(&self, account: String, amount: u64) -> Result<u64, AccountError> {
        self.count();
        let available = account.len() as u64 * 100;
        if account.starts_with("frozen") {
            Err(AccountError::Frozen(account))
        } else if amount > available {
            Err(AccountError::Insufficient {
                available,
                requested: amount,
            })
        } else {
            Ok(available - amount)
        }
    }

    async fn explode(&self, why: String) -> u64 {
        self.count();
        if why.is_empty() {
            std::panic::panic_any(7u8);
        }
        panic!("kaboom: {why}")
    }

    async fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

struct Books;

impl LedgerService for Books {
    async fn record(&self, entry: String) -> u64 {
        entry.len() as u64
    }
}

fn bank() -> AccountsDispatcher<Bank> {
    AccountsDispatcher::new(Bank::default())
}

fn args<A: Serialize>(args: &A) -> Vec<u8> {
    encode(args).unwrap()
}

/// The reason of a `BadArguments` error for `Accounts::{method}`.
fn bad_arguments(result: Result<Vec<u8>, TaskError>, method: &str) -> String {
    let error = match result {
        Err(error) => error,
        Ok(bytes) => panic!("expected bad arguments for {method}, got a result: {bytes:?}"),
    };
    assert!(!error.is_retryable(), "bad arguments never get better");
    assert!(
        error.to_string().starts_with(&format!(
            "arguments of `Accounts::{method}` cannot be decoded: "
        )),
        "{error}"
    );
    match error {
        TaskError::Dispatch(DispatchError::BadArguments {
            target,
            method: m,
            reason,
        }) => {
            assert_eq!((target.as_str(), m.as_str()), ("Accounts", method));
            assert!(!reason.is_empty());
            reason
        }
        other => panic!("expected bad arguments for {method}, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// The dispatcher
// ------------------------------------------------------------------------------------------

#[test]
fn a_dispatcher_names_its_service_and_methods() {
    assert_eq!(bank().name(), "Accounts");
    assert_eq!(
        bank().methods(),
        ["balance", "withdraw", "explode", "calls"]
    );
    assert_eq!(AccountsStub::NAME, "Accounts");
    let ledger = LedgerServiceDispatcher::new(Books);
    assert_eq!(ledger.name(), "Ledger");
    assert_eq!(ledger.methods(), ["record"]);
    assert_eq!(AccountsV2Stub::NAME, "Accounts");
}

#[tokio::test]
async fn a_call_decodes_runs_and_encodes() {
    let bank = bank();
    let balance = bank.dispatch("balance", &args(&("ada",))).await.unwrap();
    assert_eq!(decode::<u64>(&balance), Ok(300));
    // A `Result` method's `Ok` travels as the bare value.
    let left = bank
        .dispatch("withdraw", &args(&("ada", 120u64)))
        .await
        .unwrap();
    assert_eq!(decode::<u64>(&left), Ok(180));
}

#[tokio::test]
async fn an_unknown_method_is_a_dispatch_error() {
    let bank = bank();
    for method in ["deposit", "Balance", "balance ", ""] {
        let error = bank.dispatch(method, &args(&("ada",))).await.unwrap_err();
        assert_eq!(
            error,
            TaskError::Dispatch(DispatchError::UnknownMethod {
                target: "Accounts".into(),
                method: method.into()
            })
        );
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            format!("`Accounts` has no method `{method}`")
        );
    }
    // A renamed service reports the name it is registered under.
    let error = LedgerServiceDispatcher::new(Books)
        .dispatch("erase", &args(&()))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        TaskError::Dispatch(DispatchError::UnknownMethod {
            target: "Ledger".into(),
            method: "erase".into()
        })
    );
}

#[tokio::test]
async fn garbage_arguments_are_bad_arguments_with_a_reason() {
    let bank = bank();
    let garbage: [&[u8]; 6] = [
        &[],                      // nothing at all
        &[0xc1],                  // a byte MessagePack never uses
        &[0x92, 0xa3, b'a'],      // an array of two, cut inside its first string
        &[0x92],                  // an array of two, with no elements
        b"{\"account\":\"ada\"}", // JSON
        &[0xdc, 0xff, 0xff],      // an array claiming 65535 elements
    ];
    for bytes in garbage {
        bad_arguments(bank.dispatch("withdraw", bytes).await, "withdraw");
    }
    assert_eq!(
        bank.dispatch("calls", &args(&()))
            .await
            .map(|b| decode::<u64>(&b)),
        Ok(Ok(0))
    );
}

#[tokio::test]
async fn arguments_of_the_wrong_types_are_bad_arguments() {
    let bank = bank();
    // A number where a string is expected.
    let reason = bad_arguments(bank.dispatch("balance", &args(&(42u64,))).await, "balance");
    assert!(!reason.is_empty());
    // A string where a number is expected.
    bad_arguments(
        bank.dispatch("withdraw", &args(&("ada", "ten"))).await,
        "withdraw",
    );
    // A negative number where a `u64` is expected.
    bad_arguments(
        bank.dispatch("withdraw", &args(&("ada", -5i64))).await,
        "withdraw",
    );
    // Too few arguments, none at all, a bare value instead of the argument tuple.
    bad_arguments(
        bank.dispatch("withdraw", &args(&("ada",))).await,
        "withdraw",
    );
    bad_arguments(bank.dispatch("balance", &args(&())).await, "balance");
    bad_arguments(bank.dispatch("withdraw", &args(&7u64)).await, "withdraw");
    // Too many arguments: an older or newer caller; never silently dropped.
    bad_arguments(
        bank.dispatch("balance", &args(&("ada", 1u64))).await,
        "balance",
    );
    // Nothing ran.
    assert_eq!(
        bank.dispatch("calls", &args(&()))
            .await
            .map(|b| decode::<u64>(&b)),
        Ok(Ok(0))
    );
}

#[tokio::test]
async fn a_panic_is_a_panicked_task_and_the_dispatcher_still_serves() {
    let bank = bank();
    let error = bank
        .dispatch("explode", &args(&("disk full",)))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        TaskError::Panicked {
            message: "kaboom: disk full".into()
        }
    );
    assert!(error.is_retryable(), "a panic may not happen again");
    assert_eq!(error.to_string(), "the service panicked: kaboom: disk full");

    let error = bank.dispatch("explode", &args(&("",))).await.unwrap_err();
    assert_eq!(
        error,
        TaskError::Panicked {
            message: "panic with a non-string payload".into()
        }
    );

    // The same implementation value goes on serving, concurrently too.
    let balance = bank.dispatch("balance", &args(&("ada",))).await.unwrap();
    assert_eq!(decode::<u64>(&balance), Ok(300));
    let tasks: Vec<_> = (0..4)
        .map(|i| tokio::spawn(bank.dispatch("explode", &args(&(format!("#{i}"),)))))
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(
            task.await.unwrap(),
            Err(TaskError::Panicked {
                message: format!("kaboom: #{i}")
            })
        );
    }
    let calls = bank.dispatch("calls", &args(&())).await.unwrap();
    assert_eq!(decode::<u64>(&calls), Ok(7));
}

#[tokio::test]
async fn an_err_is_a_failed_task_carrying_the_decodable_error() {
    let bank = bank();
    for (account, amount, expected) in [
        (
            "ada",
            1_000u64,
            AccountError::Insufficient {
                available: 300,
                requested: 1_000,
            },
        ),
        ("frozen-7", 1, AccountError::Frozen("frozen-7".into())),
    ] {
        let error = bank
            .dispatch("withdraw", &args(&(account, amount)))
            .await
            .unwrap_err();
        let TaskError::Failed {
            error: bytes,
            message,
        } = &error
        else {
            panic!("expected a failure, got {error:?}");
        };
        assert_eq!(decode::<AccountError>(bytes).as_ref(), Ok(&expected));
        assert_eq!(message, &format!("{expected:?}"));
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            format!("the service returned an error: {expected:?}")
        );
    }
}

// ------------------------------------------------------------------------------------------
// Workflows
// ------------------------------------------------------------------------------------------

#[workflow]
pub trait Transfer {
    async fn run(&self, from: String, amount: u64) -> Result<u64, String>;
    async fn audit(&self) -> u64;
}

#[derive(Default)]
pub struct TransferImpl {
    accounts: AccountsStub,
}

#[workflow]
impl Transfer for TransferImpl {
    async fn run(&self, from: String, amount: u64) -> Result<u64, String> {
        self.accounts
            .withdraw(from, amount)
            .await
            .map_err(|e| e.to_string())
    }

    async fn audit(&self) -> u64 {
        self.accounts.calls().await.unwrap_or(0)
    }
}

fn start_error(definition: &dyn WorkflowDefinition, method: &str, input: &[u8]) -> DispatchError {
    match definition.start(method, input) {
        Ok(_) => panic!("{method} should not start"),
        Err(error) => error,
    }
}

#[test]
fn a_workflow_definition_rejects_unknown_methods_and_bad_input() {
    let definition = WorkflowFactory::new(TransferImpl::default);
    assert_eq!(definition.name(), "Transfer");
    assert!(definition.start("audit", &args(&())).is_ok());
    assert!(definition.start("run", &args(&("ada", 5u64))).is_ok());

    for method in ["refund", "Run", ""] {
        assert_eq!(
            start_error(&definition, method, &args(&())),
            DispatchError::UnknownMethod {
                target: "Transfer".into(),
                method: method.into()
            }
        );
    }
    let bad: [&[u8]; 5] = [
        &[],
        &[0xc1],
        &args(&(5u64, "ada")),
        &args(&("ada",)),
        &args(&("ada", 5u64, true)),
    ];
    for input in bad {
        match start_error(&definition, "run", input) {
            DispatchError::BadArguments {
                target,
                method,
                reason,
            } => {
                assert_eq!((target.as_str(), method.as_str()), ("Transfer", "run"));
                assert!(!reason.is_empty());
            }
            other => panic!("expected bad arguments for {input:?}, got {other:?}"),
        }
    }
}

#[test]
fn the_engine_and_replay_pass_start_errors_on() {
    let definition = WorkflowFactory::new(TransferImpl::default);
    let input = args(&());
    let start = Start {
        generation: infinitic::Generation::FIRST,
        workflow_id: WorkflowId::new("t-1"),
        run: MethodRun(0),
        method: "refund",
        input: &input,
        at: Timestamp::from_millis(0),
    };
    let unknown = DispatchError::UnknownMethod {
        target: "Transfer".into(),
        method: "refund".into(),
    };
    assert_eq!(
        WorkflowInstance::start(&definition, start).unwrap_err(),
        unknown
    );
    let history = History::new(
        WorkflowId::new("t-1"),
        "Transfer",
        "refund",
        input.clone(),
        Timestamp::from_millis(0),
    );
    assert_eq!(replay(&definition, &history).unwrap_err(), unknown);
    let history = History::new(
        WorkflowId::new("t-1"),
        "Transfer",
        "run",
        vec![0xc1],
        Timestamp::from_millis(0),
    );
    assert!(matches!(
        replay(&definition, &history).unwrap_err(),
        DispatchError::BadArguments { .. }
    ));
}

#[tokio::test]
async fn the_tester_reports_start_errors_as_dispatch_errors() {
    let result = WorkflowTester::new()
        .service(bank())
        .run(
            TransferImpl::default,
            WorkflowCall::<u64>::new("Transfer", "refund", ("ada",)),
        )
        .await;
    assert!(
        matches!(
            &result,
            Err(TesterError::Dispatch(DispatchError::UnknownMethod { method, .. })) if method == "refund"
        ),
        "{result:?}"
    );
    let result = WorkflowTester::new()
        .service(bank())
        .run(
            TransferImpl::default,
            WorkflowCall::<Result<u64, String>>::new("Transfer", "run", (5u64, "ada")),
        )
        .await;
    assert!(
        matches!(
            &result,
            Err(TesterError::Dispatch(DispatchError::BadArguments { .. }))
        ),
        "{result:?}"
    );
}

// ------------------------------------------------------------------------------------------
// What a workflow sees, through WorkflowTester
// ------------------------------------------------------------------------------------------

type Plain<T> = Result<T, StepError<NoError>>;

#[workflow]
pub trait Probe {
    /// Explodes, then asks the same service for a balance.
    async fn explode_then_balance(&self) -> (Plain<u64>, Plain<u64>);
    /// Calls the `Ledger` service.
    async fn ledger(&self) -> Plain<u64>;
    /// Withdraws `amount` from `account`, `times` times.
    async fn withdraw(
        &self,
        account: String,
        amount: u64,
        times: u32,
    ) -> Vec<Result<u64, StepError<AccountError>>>;
    /// Reads balances, `times` times.
    async fn balances(&self, times: u32) -> Vec<Plain<u64>>;
    /// Calls `Accounts` as its next version describes it.
    async fn skew(&self) -> (Plain<u64>, Plain<bool>);
}

#[derive(Default)]
pub struct ProbeImpl {
    accounts: AccountsStub,
    next: AccountsV2Stub,
    ledger: LedgerServiceStub,
}

#[workflow]
impl Probe for ProbeImpl {
    async fn explode_then_balance(&self) -> (Plain<u64>, Plain<u64>) {
        let exploded = self.accounts.explode("in a workflow".into()).await;
        let balance = self.accounts.balance("ada".into()).await;
        (exploded, balance)
    }

    async fn ledger(&self) -> Plain<u64> {
        self.ledger.record("entry".into()).await
    }

    async fn withdraw(
        &self,
        account: String,
        amount: u64,
        times: u32,
    ) -> Vec<Result<u64, StepError<AccountError>>> {
        let mut results = Vec::new();
        for _ in 0..times {
            results.push(self.accounts.withdraw(account.clone(), amount).await);
        }
        results
    }

    async fn balances(&self, times: u32) -> Vec<Plain<u64>> {
        let mut results = Vec::new();
        for _ in 0..times {
            results.push(self.accounts.balance("ada".into()).await);
        }
        results
    }

    async fn skew(&self) -> (Plain<u64>, Plain<bool>) {
        let balance = self.next.balance(7).await;
        let closed = self.next.close("ada".into()).await;
        (balance, closed)
    }
}

fn tester() -> WorkflowTester {
    WorkflowTester::new().service(bank())
}

/// Runs `call`, checks its history replays to the same result, returns the output.
async fn probe<R>(tester: WorkflowTester, call: WorkflowCall<R>) -> R
where
    R: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let run = tester.run(ProbeImpl::default, call).await.unwrap();
    let cold = replay(&WorkflowFactory::new(ProbeImpl::default), &run.history).unwrap();
    let Status::Completed(output) = cold.status else {
        panic!("history should replay to completion, got {:?}", cold.status);
    };
    assert_eq!(decode::<R>(&output).unwrap(), run.output);
    run.output
}

#[tokio::test]
async fn a_panicking_service_is_a_panicked_step_after_its_retries_and_the_workflow_goes_on() {
    let (exploded, balance) = probe(tester(), ProbeStub.explode_then_balance()).await;
    assert_eq!(
        exploded,
        Err(StepError::Panicked {
            message: "kaboom: in a workflow".into(),
            attempts: RetryPolicy::default().max_attempts
        })
    );
    assert_eq!(balance, Ok(300));
    // Without retries, the first panic is the outcome.
    let once = tester().retry(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    let (exploded, _) = probe(once, ProbeStub.explode_then_balance()).await;
    assert!(
        matches!(exploded, Err(StepError::Panicked { attempts: 1, .. })),
        "{exploded:?}"
    );
}

#[tokio::test]
async fn a_call_to_an_unregistered_service_waits_and_says_so() {
    let result = tester().run(ProbeImpl::default, ProbeStub.ledger()).await;
    let Err(TesterError::Waiting { description, .. }) = &result else {
        panic!("expected the run to wait, got {result:?}");
    };
    let [waiting] = description.waiting_on.as_slice() else {
        panic!("one call waited on: {description}");
    };
    assert_eq!(
        waiting.what,
        Waiting::Call {
            service: "Ledger".into(),
            method: "record".into()
        }
    );
    assert!(
        description.to_string().contains("Ledger::record"),
        "{description}"
    );
    // Registered, it runs.
    let result = probe(
        tester().service(LedgerServiceDispatcher::new(Books)),
        ProbeStub.ledger(),
    )
    .await;
    assert_eq!(result, Ok(5));
}

#[tokio::test]
async fn a_service_error_reaches_the_workflow_typed() {
    let results = probe(tester(), ProbeStub.withdraw("ada".into(), 1_000, 1)).await;
    assert_eq!(
        results,
        vec![Err(StepError::Failed {
            error: AccountError::Insufficient {
                available: 300,
                requested: 1_000
            },
            attempts: RetryPolicy::default().max_attempts
        })]
    );
}

#[tokio::test]
async fn an_injected_failure_reaches_the_workflow_typed_once() {
    let tester = tester().fail_next(
        "Accounts",
        "withdraw",
        AccountError::Frozen("by the test".into()),
    );
    let results = probe(tester, ProbeStub.withdraw("ada".into(), 100, 2)).await;
    assert_eq!(
        results,
        vec![
            Err(StepError::Failed {
                error: AccountError::Frozen("by the test".into()),
                attempts: 1
            }),
            Ok(200),
        ]
    );
}

#[tokio::test]
async fn injected_outcomes_reach_the_workflow_typed_as_many_times_as_asked() {
    let tester = tester()
        .inject(
            "Accounts",
            "balance",
            StepOutcome::TimedOut { attempts: 3 },
            2,
        )
        .inject("Accounts", "balance", StepOutcome::Canceled, 1)
        .inject(
            "Accounts",
            "balance",
            StepOutcome::Unknown {
                reason: "gone".into(),
            },
            1,
        );
    let results = probe(tester, ProbeStub.balances(5)).await;
    assert_eq!(
        results,
        vec![
            Err(StepError::TimedOut { attempts: 3 }),
            Err(StepError::TimedOut { attempts: 3 }),
            Err(StepError::Canceled),
            Err(StepError::Unknown {
                reason: "gone".into()
            }),
            Ok(300),
        ]
    );
}

#[tokio::test]
async fn an_error_injected_into_a_method_that_cannot_fail_is_invalid() {
    let tester = tester().fail_next("Accounts", "balance", "not an error type".to_string());
    let results = probe(tester, ProbeStub.balances(1)).await;
    let [Err(StepError::Invalid { reason })] = results.as_slice() else {
        panic!("expected an invalid step, got {results:?}");
    };
    assert!(
        reason.contains("cannot decode the service's error"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_workflow_built_against_another_version_of_a_service_sees_typed_errors() {
    let (balance, closed) = probe(tester(), ProbeStub.skew()).await;
    let Err(StepError::Invalid { reason }) = &balance else {
        panic!("expected invalid arguments, got {balance:?}");
    };
    assert!(
        reason.contains("arguments of `Accounts::balance` cannot be decoded"),
        "{reason}"
    );
    let Err(StepError::Unknown { reason }) = &closed else {
        panic!("expected an unknown method, got {closed:?}");
    };
    assert!(reason.contains("close"), "{reason}");
}
