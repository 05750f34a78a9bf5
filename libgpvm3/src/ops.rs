//! The predefined reduction functions PvmMax, PvmMin, PvmSum and PvmProduct: `x[i] = f(x[i],
//! y[i])` for every element. Complex numbers are pairs; max/min keep the pair of larger/smaller
//! modulus (ties keep x), sum and product are complex arithmetic. Sum and product of bytes are
//! not defined (PvmBadParam), as in the legacy library.

use std::os::raw::{c_char, c_int, c_long, c_void};

use crate::ffi::{
    PVM_BAD_PARAM, PVM_BYTE, PVM_CPLX, PVM_DCPLX, PVM_DOUBLE, PVM_FLOAT, PVM_INT, PVM_LONG, PVM_OK, PVM_SHORT,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Max,
    Min,
    Sum,
    Product,
}

fn scalar<T: Copy + PartialOrd>(op: Op, x: &mut [T], y: &[T], add: fn(T, T) -> T, mul: fn(T, T) -> T) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a = match op {
            // The legacy MAX/MIN macros pick y only when it compares strictly greater/smaller.
            Op::Max => {
                if b > *a {
                    b
                } else {
                    *a
                }
            }
            Op::Min => {
                if b < *a {
                    b
                } else {
                    *a
                }
            }
            Op::Sum => add(*a, b),
            Op::Product => mul(*a, b),
        };
    }
}

fn complex<T>(op: Op, x: &mut [T], y: &[T])
where
    T: Copy + PartialOrd + std::ops::Add<Output = T> + std::ops::Sub<Output = T> + std::ops::Mul<Output = T>,
{
    for (a, b) in x.chunks_exact_mut(2).zip(y.chunks_exact(2)) {
        let (ar, ai, br, bi) = (a[0], a[1], b[0], b[1]);
        match op {
            Op::Max | Op::Min => {
                let ma = ar * ar + ai * ai;
                let mb = br * br + bi * bi;
                let take = if op == Op::Max { mb > ma } else { mb < ma };
                if take {
                    a[0] = br;
                    a[1] = bi;
                }
            }
            Op::Sum => {
                a[0] = ar + br;
                a[1] = ai + bi;
            }
            Op::Product => {
                a[0] = ar * br - ai * bi;
                a[1] = ar * bi + ai * br;
            }
        }
    }
}

/// Applies `op` to `num` elements; returns the `info` value.
///
/// # Safety
/// `x` and `y` must point to `num` elements of `datatype` (pairs for complex types).
pub unsafe fn apply(op: Op, datatype: c_int, x: *mut c_void, y: *const c_void, num: c_int) -> c_int {
    let defined = matches!(datatype, PVM_SHORT..=PVM_LONG) || (datatype == PVM_BYTE && matches!(op, Op::Max | Op::Min));
    if !defined {
        return PVM_BAD_PARAM;
    }
    let n = usize::try_from(num).unwrap_or(0);
    if n == 0 {
        return PVM_OK;
    }
    if x.is_null() || y.is_null() {
        return PVM_BAD_PARAM;
    }
    macro_rules! run {
        ($t:ty, $len:expr, $f:expr) => {{
            // SAFETY: the caller guarantees the element count and type.
            let (xs, ys) = unsafe {
                (
                    std::slice::from_raw_parts_mut(x as *mut $t, $len),
                    std::slice::from_raw_parts(y as *const $t, $len),
                )
            };
            $f(xs, ys);
        }};
    }
    match (datatype, op) {
        (PVM_BYTE, Op::Sum | Op::Product) => return PVM_BAD_PARAM,
        (PVM_BYTE, _) => run!(c_char, n, |a: &mut [c_char], b: &[c_char]| scalar(
            op,
            a,
            b,
            c_char::wrapping_add,
            c_char::wrapping_mul
        )),
        (PVM_SHORT, _) => run!(i16, n, |a: &mut [i16], b: &[i16]| scalar(
            op,
            a,
            b,
            i16::wrapping_add,
            i16::wrapping_mul
        )),
        (PVM_INT, _) => run!(c_int, n, |a: &mut [c_int], b: &[c_int]| scalar(
            op,
            a,
            b,
            c_int::wrapping_add,
            c_int::wrapping_mul
        )),
        (PVM_LONG, _) => run!(c_long, n, |a: &mut [c_long], b: &[c_long]| scalar(
            op,
            a,
            b,
            c_long::wrapping_add,
            c_long::wrapping_mul
        )),
        (PVM_FLOAT, _) => run!(f32, n, |a: &mut [f32], b: &[f32]| scalar(
            op,
            a,
            b,
            |p, q| p + q,
            |p, q| p * q
        )),
        (PVM_DOUBLE, _) => run!(f64, n, |a: &mut [f64], b: &[f64]| scalar(
            op,
            a,
            b,
            |p, q| p + q,
            |p, q| p * q
        )),
        (PVM_CPLX, _) => run!(f32, 2 * n, |a: &mut [f32], b: &[f32]| complex(op, a, b)),
        (PVM_DCPLX, _) => run!(f64, 2 * n, |a: &mut [f64], b: &[f64]| complex(op, a, b)),
        _ => return PVM_BAD_PARAM,
    }
    PVM_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(op: Op, mut x: Vec<c_int>, y: Vec<c_int>) -> (c_int, Vec<c_int>) {
        let n = x.len() as c_int;
        let rc = unsafe { apply(op, PVM_INT, x.as_mut_ptr().cast(), y.as_ptr().cast(), n) };
        (rc, x)
    }

    #[test]
    fn integer_ops() {
        assert_eq!(ints(Op::Max, vec![1, 5, -3], vec![2, 4, -4]), (0, vec![2, 5, -3]));
        assert_eq!(ints(Op::Min, vec![1, 5, -3], vec![2, 4, -4]), (0, vec![1, 4, -4]));
        assert_eq!(ints(Op::Sum, vec![1, 5, -3], vec![2, 4, -4]), (0, vec![3, 9, -7]));
        assert_eq!(ints(Op::Product, vec![1, 5, -3], vec![2, 4, -4]), (0, vec![2, 20, 12]));
    }

    #[test]
    fn complex_ops() {
        let mut x = [1.0f64, 2.0, 3.0, 0.0];
        let y = [0.0f64, 1.0, 0.0, 4.0];
        assert_eq!(
            unsafe { apply(Op::Product, PVM_DCPLX, x.as_mut_ptr().cast(), y.as_ptr().cast(), 2) },
            0
        );
        assert_eq!(x, [-2.0, 1.0, 0.0, 12.0]);
        let mut x = [1.0f32, 1.0, 3.0, 0.0];
        let y = [0.0f32, 2.0, 0.0, 1.0];
        assert_eq!(
            unsafe { apply(Op::Max, PVM_CPLX, x.as_mut_ptr().cast(), y.as_ptr().cast(), 2) },
            0
        );
        assert_eq!(x, [0.0, 2.0, 3.0, 0.0]);
    }

    #[test]
    fn bytes_have_no_sum_and_unknown_types_fail() {
        let mut x = [1i8, 2];
        let y = [3i8, 0];
        assert_eq!(
            unsafe { apply(Op::Sum, PVM_BYTE, x.as_mut_ptr().cast(), y.as_ptr().cast(), 2) },
            PVM_BAD_PARAM
        );
        assert_eq!(
            unsafe { apply(Op::Max, PVM_BYTE, x.as_mut_ptr().cast(), y.as_ptr().cast(), 2) },
            0
        );
        assert_eq!(x, [3, 2]);
        assert_eq!(
            unsafe { apply(Op::Max, 42, x.as_mut_ptr().cast(), y.as_ptr().cast(), 2) },
            PVM_BAD_PARAM
        );
    }
}
