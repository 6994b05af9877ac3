/* Compiled inner loops of a tick-ladder book side (deribit_kit.live.ladder._Ladder.apply and .head).
 *
 * Optional: when this extension is not built, live/ladder.py runs the same loops in Python.
 * ladder_apply takes the entries the common way (a known price, or a delete of an unknown one) and
 * stops at any entry it does not take (a price new to the side, a malformed entry, a value of an unexpected type), so
 * the Python code handles that one entry with its own rules and errors, then calls in again.
 *
 * A price's slot is computed, not looked up: round((price - origin) * scale), rounding half to
 * even like Python's round(); the price is known when owners[slot] equals it (the Python side
 * keeps owners and its index dict in step, so this is the same test as "price in index").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* 1 when `action` is the str "delete", 0 when another str, -1 when not an exact str. */
static int
is_delete(PyObject *action)
{
    if (!PyUnicode_CheckExact(action))
        return -1;
    if (PyUnicode_GET_LENGTH(action) != 6 || PyUnicode_KIND(action) != PyUnicode_1BYTE_KIND)
        return 0;
    return memcmp(PyUnicode_1BYTE_DATA(action), "delete", 6) == 0;
}

/* A new reference to `x` as a float (exact floats and ints only), NULL without an exception
 * for any other type. *nonzero tells whether the number is truthy. */
static PyObject *
as_float(PyObject *x, int *nonzero)
{
    if (PyFloat_CheckExact(x)) {
        *nonzero = PyFloat_AS_DOUBLE(x) != 0.0;
        Py_INCREF(x);
        return x;
    }
    if (PyLong_CheckExact(x)) {
        double d = PyLong_AsDouble(x);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        *nonzero = d != 0.0;
        return PyFloat_FromDouble(d);
    }
    return NULL;
}

/* ladder_apply(slots, owners, origin, scale, entries, pos, first, count) -> (pos, first, count, unknown)
 *
 * Applies entries[pos:] to `slots` (list of (price, amount) tuples or None; `owners[i]` is the
 * price of slot i, or None) until the end or an entry it does not take; returns where it
 * stopped, the side's new `first` and `count`, and the number of deletes of unknown prices. */
static PyObject *
ladder_apply(PyObject *self, PyObject *args)
{
    PyObject *slots, *owners, *entries;
    double origin, scale;
    Py_ssize_t pos, first, count, unknown = 0;

    if (!PyArg_ParseTuple(args, "O!O!ddO!nnn:ladder_apply", &PyList_Type, &slots, &PyList_Type, &owners,
                          &origin, &scale, &PyList_Type, &entries, &pos, &first, &count))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(entries), size = PyList_GET_SIZE(slots);
    if (PyList_GET_SIZE(owners) != size) {
        PyErr_SetString(PyExc_ValueError, "slots and owners differ in length");
        return NULL;
    }
    if (pos < 0)
        pos = 0;

    for (; pos < n; pos++) {
        PyObject *entry = PyList_GET_ITEM(entries, pos);
        PyObject *action, *price, *amount;
        if (PyList_CheckExact(entry) && PyList_GET_SIZE(entry) == 3) {
            action = PyList_GET_ITEM(entry, 0);
            price = PyList_GET_ITEM(entry, 1);
            amount = PyList_GET_ITEM(entry, 2);
        }
        else if (PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 3) {
            action = PyTuple_GET_ITEM(entry, 0);
            price = PyTuple_GET_ITEM(entry, 1);
            amount = PyTuple_GET_ITEM(entry, 2);
        }
        else
            break;
        int del = is_delete(action);
        if (del < 0)
            break;
        int unused, nonzero = 0;
        PyObject *fprice = as_float(price, &unused);
        if (fprice == NULL)
            break;
        double p = PyFloat_AS_DOUBLE(fprice);
        double x = nearbyint((p - origin) * scale); /* the slot this price has, if any */
        PyObject *owner = NULL;
        if (isfinite(x) && x >= 0.0 && x < (double)size) {
            owner = PyList_GET_ITEM(owners, (Py_ssize_t)x);
            if (owner != Py_None && !PyFloat_CheckExact(owner)) {
                Py_DECREF(fprice);
                break; /* owners hold floats (ladder.py stores them so); anything else: Python decides */
            }
            if (owner == Py_None || PyFloat_AS_DOUBLE(owner) != p)
                owner = NULL;
        }
        PyObject *famount = as_float(amount, &nonzero);
        if (famount == NULL) {
            Py_DECREF(fprice);
            break;
        }
        if (owner == NULL) { /* a price the side has not seen since it was laid out */
            Py_DECREF(fprice);
            Py_DECREF(famount);
            if (nonzero && !del)
                break; /* Python finds it a slot, or lays the side out again */
            if (del)
                unknown++;
            continue;
        }
        Py_ssize_t i = (Py_ssize_t)x;
        PyObject *old = PyList_GET_ITEM(slots, i);
        if (nonzero && !del) {
            PyObject *level = PyTuple_New(2);
            if (level == NULL) {
                Py_DECREF(fprice);
                Py_DECREF(famount);
                return NULL;
            }
            PyTuple_SET_ITEM(level, 0, fprice);
            PyTuple_SET_ITEM(level, 1, famount);
            if (old == Py_None) {
                count++;
                if (i < first)
                    first = i;
            }
            PyList_SET_ITEM(slots, i, level);
            Py_DECREF(old);
            continue;
        }
        Py_DECREF(fprice);
        Py_DECREF(famount);
        if (old != Py_None) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(slots, i, Py_None);
            Py_DECREF(old);
            count--;
        }
        else if (del)
            unknown++;
    }
    return Py_BuildValue("nnnn", pos, first, count, unknown);
}

/* ladder_head(slots, first, n) -> the first n non-None items of slots[first:] (fewer at the end). */
static PyObject *
ladder_head(PyObject *self, PyObject *args)
{
    PyObject *slots;
    Py_ssize_t first, n;

    if (!PyArg_ParseTuple(args, "O!nn:ladder_head", &PyList_Type, &slots, &first, &n))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t size = PyList_GET_SIZE(slots);
    for (Py_ssize_t i = first < 0 ? 0 : first; i < size && PyList_GET_SIZE(out) < n; i++) {
        PyObject *level = PyList_GET_ITEM(slots, i);
        if (level != Py_None && PyList_Append(out, level) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"ladder_apply", ladder_apply, METH_VARARGS,
     "ladder_apply(slots, owners, origin, scale, entries, pos, first, count) -> (pos, first, count, unknown)"},
    {"ladder_head", ladder_head, METH_VARARGS, "ladder_head(slots, first, n) -> the first n levels from slot first"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "deribit_kit.live._speedups",
    "Compiled hot loops of deribit_kit.live.ladder (optional; ladder.py has the same loops in Python).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
