// A service method may have a default body in the trait; it runs on the worker like any
// other method, and implementations may keep or override it.
use infinitic::prelude::*;

#[service]
pub trait Greeter {
    async fn greet(&self, name: String) -> String;

    async fn greet_all(&self, names: Vec<String>) -> Vec<String> {
        let mut out = Vec::new();
        for name in names {
            out.push(self.greet(name).await);
        }
        out
    }
}

pub struct English;

impl Greeter for English {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

pub struct Terse;

impl Greeter for Terse {
    async fn greet(&self, name: String) -> String {
        name
    }

    async fn greet_all(&self, names: Vec<String>) -> Vec<String> {
        vec![names.join(",")]
    }
}

#[workflow]
pub trait Welcome {
    async fn run(&self, names: Vec<String>) -> Vec<String>;
}

#[derive(Default)]
pub struct WelcomeImpl {
    greeter: GreeterStub,
}

#[workflow]
impl Welcome for WelcomeImpl {
    async fn run(&self, names: Vec<String>) -> Vec<String> {
        self.greeter.greet_all(names).await.unwrap_or_default()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(GreeterStub::METHODS, ["greet", "greet_all"]);
    let names = vec!["Ada".to_string(), "Alan".to_string()];

    let run = WorkflowTester::new()
        .service(GreeterDispatcher::new(English))
        .run(WelcomeImpl::default, WelcomeStub.run(names.clone()))
        .await
        .expect("completes");
    assert_eq!(run.output, ["Hello, Ada!", "Hello, Alan!"]);

    let run = WorkflowTester::new()
        .service(GreeterDispatcher::new(Terse))
        .run(WelcomeImpl::default, WelcomeStub.run(names))
        .await
        .expect("completes");
    assert_eq!(run.output, ["Ada,Alan"]);
}
