// A realistic file: the workflow trait has one wrong method and is implemented. Only that
// method is reported; the stub and the impl's registration still compile.
use infinitic::prelude::*;

#[workflow]
pub trait Signup {
    async fn run(&self, email: String) -> bool;
    async fn cancel(&self, reason: &str);
}

#[derive(Default)]
pub struct SignupImpl;

#[workflow]
impl Signup for SignupImpl {
    async fn run(&self, email: String) -> bool {
        !email.is_empty()
    }
    async fn cancel(&self, _reason: &str) {}
}

fn main() {
    let _ = SignupStub.run("ada@example.com".to_string());
}
