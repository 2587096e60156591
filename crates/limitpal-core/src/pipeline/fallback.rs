//! Fallback: a substitute answer for a run that gave up, asked once where the run ends.
//!
//! A builder's `.fallback(f)` keeps `f` apart from the classifier (so `.classifier(..)` may
//! come before or after it) and at `build` pairs them in a [`WithFallback`], the classifier
//! the pipeline runs with. Without a fallback the classifier is the one given, unchanged.

use std::fmt;
use std::sync::Arc;

use crate::{Classify, Error, Outcome, Verdict};

/// What a builder holds in place of a fallback: [`NoFallback`] or [`FallbackFn`].
pub trait FallbackSlot {
    /// The classifier the pipeline runs with, made from the builder's classifier `Cl`.
    type With<Cl>;
    /// Pairs the fallback (if any) with `classifier`.
    fn wrap<Cl>(self, classifier: Cl) -> Self::With<Cl>;
}

/// No fallback: the pipeline's classifier is the one given.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFallback;

impl FallbackSlot for NoFallback {
    type With<Cl> = Cl;

    #[inline]
    fn wrap<Cl>(self, classifier: Cl) -> Cl {
        classifier
    }
}

/// The fallback `F`: `Fn(&Error<E>) -> Option<T>`, `Some` for the errors it answers.
pub struct FallbackFn<F>(Arc<F>);

impl<F> FallbackFn<F> {
    /// Wraps `fallback`.
    pub fn new(fallback: F) -> Self {
        Self(Arc::new(fallback))
    }
}

impl<F> Clone for FallbackFn<F> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<F> fmt::Debug for FallbackFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FallbackFn")
    }
}

impl<F> FallbackSlot for FallbackFn<F> {
    type With<Cl> = WithFallback<Cl, F>;

    fn wrap<Cl>(self, classifier: Cl) -> WithFallback<Cl, F> {
        WithFallback {
            classifier,
            fallback: self.0,
        }
    }
}

/// A classifier and a fallback: classifies as `Cl`, and answers with `F` for the errors it
/// accepts.
pub struct WithFallback<Cl, F> {
    classifier: Cl,
    fallback: Arc<F>,
}

impl<Cl: Clone, F> Clone for WithFallback<Cl, F> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            fallback: Arc::clone(&self.fallback),
        }
    }
}

impl<Cl: fmt::Debug, F> fmt::Debug for WithFallback<Cl, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithFallback")
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<T, E, Cl, F> Classify<T, E> for WithFallback<Cl, F>
where
    Cl: Classify<T, E>,
    F: Fn(&Error<E>) -> Option<T> + Send + Sync + 'static,
{
    #[inline(always)]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self.classifier.classify(result)
    }

    #[inline(always)]
    fn verdict(&self, result: Result<&T, &E>) -> Verdict {
        self.classifier.verdict(result)
    }

    #[inline(always)]
    fn verdict_with(&self, result: Result<&T, &E>, pushback: bool) -> Verdict {
        self.classifier.verdict_with(result, pushback)
    }

    fn fallback(&self, error: &Error<E>) -> Option<T> {
        (self.fallback)(error)
    }
}
