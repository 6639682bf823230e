use infinitic::prelude::*;

#[workflow]
trait Onboarding {
    fn run(&self, user: String) -> bool;
}

fn main() {}
