/* espcore._aead: AES-GCM and ChaCha20-Poly1305 with a 16-byte tag, on OpenSSL's EVP interface.
 *
 * The optional accelerator of espcore's AEAD data path (espcore.aead). The cipher context is keyed
 * once per object, so a packet pays for setting the nonce and the AEAD work only; ``seal`` and
 * ``open`` take the payload as a range of a larger buffer and ``seal`` writes the ESP header, the
 * ciphertext and the tag into the one bytes object it returns, so no intermediate copy is made.
 * Python code decides everything else (headers, trailer, replay window, counters).
 *
 *   Aead(kind, key)         kind "aes-gcm" (16, 24 or 32-byte key) or "chacha20-poly1305" (32)
 *   encrypt(nonce, data, aad) -> ciphertext || tag       (as cryptography's AEAD classes)
 *   decrypt(nonce, data, aad) -> plaintext                raises InvalidTag
 *   seal(nonce, aad, head, data, start, end, trailer)
 *       -> head || E(data[start:end] || trailer) || tag
 *   open(nonce, aad, data, start, end) -> D(data[start:end])   the range ends with the tag
 *   seal_esp(salt, head, data, start, end, trailer)     seal with ESP's nonce and AAD, taken
 *   open_esp(salt, data, start, end)                    from SPI || sequence number || IV
 *       (RFC 4106 §4-§5, RFC 7634 §2-§3, 32-bit sequence numbers): for seal_esp the last 16
 *       bytes of head, for open_esp the first 16 bytes of the range
 *
 * Nonces are 12 bytes (RFC 4106 §4, RFC 7634 §2). Bad arguments raise TypeError or ValueError;
 * a failed tag raises cryptography.exceptions.InvalidTag and the output is discarded. No input
 * is ever written to and the contexts are freed (and cleansed by OpenSSL) with the object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#define TAG 16
#define NONCE 12

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
} AeadObject;

static PyObject *InvalidTag;

/* A read-only view of a bytes-like argument; bytes are read without the buffer protocol. */
typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_buffer view;
    int has_view;
} Input;

static int input_get(PyObject *obj, Input *in, const char *what) {
    in->has_view = 0;
    if (PyBytes_CheckExact(obj)) {
        in->buf = (const unsigned char *)PyBytes_AS_STRING(obj);
        in->len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &in->view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like, not %.100s", what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    in->has_view = 1;
    in->buf = in->view.buf;
    in->len = in->view.len;
    return 0;
}

static void input_release(Input *in) {
    if (in->has_view) {
        PyBuffer_Release(&in->view);
        in->has_view = 0;
    }
}

static int fail_openssl(void) {
    ERR_clear_error();
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL AEAD operation failed");
    return -1;
}

/* Set the nonce and feed the AAD: the context keeps its key from the constructor. */
static int start(EVP_CIPHER_CTX *ctx, int encrypting, const Input *nonce, const Input *aad) {
    int n;
    if (ctx == NULL) {  /* made by Aead.__new__ without __init__ */
        PyErr_SetString(PyExc_ValueError, "this Aead object has no key");
        return -1;
    }
    if (nonce->len != NONCE) {
        PyErr_SetString(PyExc_ValueError, "the nonce must be 12 bytes");
        return -1;
    }
    if (aad->len > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "associated data too long");
        return -1;
    }
    if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce->buf, encrypting))
        return fail_openssl();
    if (aad->len && !EVP_CipherUpdate(ctx, NULL, &n, aad->buf, (int)aad->len))
        return fail_openssl();
    return 0;
}

/* Encrypt the parts in order into out, then append the tag. */
static int seal_into(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *a, Py_ssize_t alen,
                     const unsigned char *b, Py_ssize_t blen) {
    int n = 0, total = 0;
    if (alen && !EVP_EncryptUpdate(ctx, out, &n, a, (int)alen))
        return fail_openssl();
    total += n;
    n = 0;
    if (blen && !EVP_EncryptUpdate(ctx, out + total, &n, b, (int)blen))
        return fail_openssl();
    total += n;
    if (!EVP_EncryptFinal_ex(ctx, out + total, &n))
        return fail_openssl();
    total += n;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG, out + total))
        return fail_openssl();
    return 0;
}

/* Decrypt ct (its last TAG bytes are the tag) into out; 1 if the tag verified, 0 if not. */
static int open_into(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *ct, Py_ssize_t len) {
    int n = 0, total = 0;
    Py_ssize_t body = len - TAG;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG, (void *)(ct + body)))
        return fail_openssl();
    if (body && !EVP_DecryptUpdate(ctx, out, &n, ct, (int)body))
        return fail_openssl();
    total += n;
    if (EVP_DecryptFinal_ex(ctx, out + total, &n) > 0)
        return 1;
    ERR_clear_error();
    return 0;
}

static int check_args(Py_ssize_t nargs, Py_ssize_t want, const char *name) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

/* start and end as indices into a buffer of length len (no negative or reversed ranges). */
static int get_range(PyObject *const *args, Py_ssize_t len, Py_ssize_t *start, Py_ssize_t *end) {
    *start = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (*start == -1 && PyErr_Occurred())
        return -1;
    *end = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (*end == -1 && PyErr_Occurred())
        return -1;
    if (*start < 0 || *start > *end || *end > len) {
        PyErr_SetString(PyExc_ValueError, "start and end must satisfy 0 <= start <= end <= len(data)");
        return -1;
    }
    return 0;
}

/* The inputs of one call, released together. */
typedef struct {
    Input in[5];
    int n;
} Inputs;

static const Input *take(Inputs *all, PyObject *obj, const char *what) {
    Input *in = &all->in[all->n];
    if (input_get(obj, in, what) < 0)
        return NULL;
    all->n++;
    return in;
}

static void release_all(Inputs *all) {
    while (all->n > 0)
        input_release(&all->in[--all->n]);
}

/* head || E(body || trailer) || tag, in one new bytes object. */
static PyObject *seal(EVP_CIPHER_CTX *ctx, const Input *nonce, const Input *aad, const Input *head,
                      const unsigned char *body, Py_ssize_t blen, const Input *trailer) {
    Py_ssize_t hlen = head ? head->len : 0, tlen = trailer ? trailer->len : 0;
    PyObject *out;
    unsigned char *o;
    if (tlen > INT_MAX - TAG || blen > INT_MAX - TAG - tlen || hlen > PY_SSIZE_T_MAX - INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "data too long");
        return NULL;
    }
    if (start(ctx, 1, nonce, aad) < 0)
        return NULL;
    out = PyBytes_FromStringAndSize(NULL, hlen + blen + tlen + TAG);
    if (out == NULL)
        return NULL;
    o = (unsigned char *)PyBytes_AS_STRING(out);
    if (hlen)
        memcpy(o, head->buf, hlen);
    if (seal_into(ctx, o + hlen, body, blen, tlen ? trailer->buf : NULL, tlen) < 0)
        Py_CLEAR(out);
    return out;
}

/* D(ct), the last TAG bytes of ct being the tag; InvalidTag if it does not verify. */
static PyObject *open_(EVP_CIPHER_CTX *ctx, const Input *nonce, const Input *aad,
                       const unsigned char *ct, Py_ssize_t len) {
    PyObject *out;
    int ok;
    if (len > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "data too long");
        return NULL;
    }
    if (len < TAG) {
        PyErr_SetNone(InvalidTag);
        return NULL;
    }
    if (start(ctx, 0, nonce, aad) < 0)
        return NULL;
    out = PyBytes_FromStringAndSize(NULL, len - TAG);
    if (out == NULL)
        return NULL;
    ok = open_into(ctx, (unsigned char *)PyBytes_AS_STRING(out), ct, len);
    if (ok != 1) {
        Py_CLEAR(out);
        if (ok == 0)
            PyErr_SetNone(InvalidTag);
    }
    return out;
}

static PyObject *Aead_encrypt(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Inputs all = {.n = 0};
    const Input *nonce, *data, *aad;
    PyObject *out = NULL;
    if (check_args(nargs, 3, "encrypt") == 0 && (nonce = take(&all, args[0], "nonce"))
            && (data = take(&all, args[1], "data")) && (aad = take(&all, args[2], "associated_data")))
        out = seal(self->enc, nonce, aad, NULL, data->buf, data->len, NULL);
    release_all(&all);
    return out;
}

static PyObject *Aead_decrypt(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Inputs all = {.n = 0};
    const Input *nonce, *data, *aad;
    PyObject *out = NULL;
    if (check_args(nargs, 3, "decrypt") == 0 && (nonce = take(&all, args[0], "nonce"))
            && (data = take(&all, args[1], "data")) && (aad = take(&all, args[2], "associated_data")))
        out = open_(self->dec, nonce, aad, data->buf, data->len);
    release_all(&all);
    return out;
}

static PyObject *Aead_seal(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Inputs all = {.n = 0};
    const Input *nonce, *aad, *head, *data, *trailer;
    Py_ssize_t lo, hi;
    PyObject *out = NULL;
    if (check_args(nargs, 7, "seal") == 0 && (nonce = take(&all, args[0], "nonce"))
            && (aad = take(&all, args[1], "associated_data")) && (head = take(&all, args[2], "head"))
            && (data = take(&all, args[3], "data")) && (trailer = take(&all, args[6], "trailer"))
            && get_range(args + 4, data->len, &lo, &hi) == 0)
        out = seal(self->enc, nonce, aad, head, data->buf + lo, hi - lo, trailer);
    release_all(&all);
    return out;
}

static PyObject *Aead_open(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Inputs all = {.n = 0};
    const Input *nonce, *aad, *data;
    Py_ssize_t lo, hi;
    PyObject *out = NULL;
    if (check_args(nargs, 5, "open") == 0 && (nonce = take(&all, args[0], "nonce"))
            && (aad = take(&all, args[1], "associated_data")) && (data = take(&all, args[2], "data"))
            && get_range(args + 3, data->len, &lo, &hi) == 0)
        out = open_(self->dec, nonce, aad, data->buf + lo, hi - lo);
    release_all(&all);
    return out;
}

/* ESP's AEAD framing with 32-bit sequence numbers (RFC 4106 §4-§5, RFC 7634 §2-§3): the 16
 * bytes SPI || sequence number || IV give the AAD (SPI || sequence number) and, after the 4-byte
 * salt, the nonce (salt || IV). */
#define ESP_HEAD 16

static void esp_nonce(const Input *salt, const unsigned char *esp, unsigned char nonce[NONCE],
                      Input *nonce_in, Input *aad_in) {
    memcpy(nonce, salt->buf, 4);
    memcpy(nonce + 4, esp + 8, 8);
    nonce_in->buf = nonce;
    nonce_in->len = NONCE;
    nonce_in->has_view = 0;
    aad_in->buf = esp;
    aad_in->len = 8;
    aad_in->has_view = 0;
}

static PyObject *Aead_seal_esp(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Inputs all = {.n = 0};
    const Input *salt, *head, *data, *trailer;
    Input nonce_in, aad_in;
    unsigned char nonce[NONCE];
    Py_ssize_t lo, hi;
    PyObject *out = NULL;
    if (check_args(nargs, 6, "seal_esp") == 0 && (salt = take(&all, args[0], "salt"))
            && (head = take(&all, args[1], "head")) && (data = take(&all, args[2], "data"))
            && (trailer = take(&all, args[5], "trailer"))
            && get_range(args + 3, data->len, &lo, &hi) == 0) {
        if (salt->len != 4 || head->len < ESP_HEAD) {
            PyErr_SetString(PyExc_ValueError,
                            "a 4-byte salt and a head ending with SPI, sequence number and IV are needed");
        } else {
            esp_nonce(salt, head->buf + head->len - ESP_HEAD, nonce, &nonce_in, &aad_in);
            out = seal(self->enc, &nonce_in, &aad_in, head, data->buf + lo, hi - lo, trailer);
        }
    }
    release_all(&all);
    return out;
}

static PyObject *Aead_open_esp(AeadObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Inputs all = {.n = 0};
    const Input *salt, *data;
    Input nonce_in, aad_in;
    unsigned char nonce[NONCE];
    Py_ssize_t lo, hi;
    PyObject *out = NULL;
    if (check_args(nargs, 4, "open_esp") == 0 && (salt = take(&all, args[0], "salt"))
            && (data = take(&all, args[1], "data"))
            && get_range(args + 2, data->len, &lo, &hi) == 0) {
        if (salt->len != 4) {
            PyErr_SetString(PyExc_ValueError, "the salt must be 4 bytes");
        } else if (hi - lo < ESP_HEAD + TAG) {
            PyErr_SetNone(InvalidTag);
        } else {
            esp_nonce(salt, data->buf + lo, nonce, &nonce_in, &aad_in);
            out = open_(self->dec, &nonce_in, &aad_in, data->buf + lo + ESP_HEAD, hi - lo - ESP_HEAD);
        }
    }
    release_all(&all);
    return out;
}

static int Aead_init(AeadObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"kind", "key", NULL};
    const char *kind;
    Py_buffer key;
    const EVP_CIPHER *cipher = NULL;
    int ok;
    if (self->enc != NULL) {
        PyErr_SetString(PyExc_TypeError, "an Aead object is keyed once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sy*", kwlist, &kind, &key))
        return -1;
    if (strcmp(kind, "aes-gcm") == 0)
        cipher = key.len == 16 ? EVP_aes_128_gcm() : key.len == 24 ? EVP_aes_192_gcm()
                 : key.len == 32 ? EVP_aes_256_gcm() : NULL;
    else if (strcmp(kind, "chacha20-poly1305") == 0)
        cipher = key.len == 32 ? EVP_chacha20_poly1305() : NULL;
    else {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "unknown AEAD %s (aes-gcm or chacha20-poly1305)", kind);
        return -1;
    }
    if (cipher == NULL) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "wrong key length for %s", kind);
        return -1;
    }
    self->enc = EVP_CIPHER_CTX_new();
    self->dec = EVP_CIPHER_CTX_new();
    ok = self->enc != NULL && self->dec != NULL
         && EVP_EncryptInit_ex(self->enc, cipher, NULL, key.buf, NULL)
         && EVP_DecryptInit_ex(self->dec, cipher, NULL, key.buf, NULL);
    PyBuffer_Release(&key);
    if (!ok)
        return fail_openssl();
    return 0;
}

static void Aead_dealloc(AeadObject *self) {
    EVP_CIPHER_CTX_free(self->enc);  /* frees and cleanses the key schedule */
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Aead_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))Aead_encrypt, METH_FASTCALL,
     "encrypt(nonce, data, associated_data) -> ciphertext || tag"},
    {"decrypt", (PyCFunction)(void (*)(void))Aead_decrypt, METH_FASTCALL,
     "decrypt(nonce, data, associated_data) -> plaintext; InvalidTag if the tag fails"},
    {"seal", (PyCFunction)(void (*)(void))Aead_seal, METH_FASTCALL,
     "seal(nonce, associated_data, head, data, start, end, trailer)\n"
     "-> head || encrypt(data[start:end] || trailer) || tag"},
    {"open", (PyCFunction)(void (*)(void))Aead_open, METH_FASTCALL,
     "open(nonce, associated_data, data, start, end) -> decrypt(data[start:end])"},
    {"seal_esp", (PyCFunction)(void (*)(void))Aead_seal_esp, METH_FASTCALL,
     "seal_esp(salt, head, data, start, end, trailer) -> seal(salt || IV, SPI || sequence,\n"
     "head, data, start, end, trailer), head ending with SPI, sequence number and IV"},
    {"open_esp", (PyCFunction)(void (*)(void))Aead_open_esp, METH_FASTCALL,
     "open_esp(salt, data, start, end) -> open(salt || IV, SPI || sequence, data, start + 16, end),\n"
     "data[start:start + 16] being SPI, sequence number and IV"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "espcore._aead.Aead",
    .tp_basicsize = sizeof(AeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Aead(kind, key): AES-GCM or ChaCha20-Poly1305, 16-byte tag, keyed once",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Aead_init,
    .tp_dealloc = (destructor)Aead_dealloc,
    .tp_methods = Aead_methods,
};

static struct PyModuleDef aead_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "espcore._aead",
    .m_doc = "AES-GCM and ChaCha20-Poly1305 on OpenSSL's EVP interface, keyed once per object.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__aead(void) {
    PyObject *module, *exceptions;
    if (PyType_Ready(&AeadType) < 0)
        return NULL;
    exceptions = PyImport_ImportModule("cryptography.exceptions");
    if (exceptions == NULL)
        return NULL;
    InvalidTag = PyObject_GetAttrString(exceptions, "InvalidTag");
    Py_DECREF(exceptions);
    if (InvalidTag == NULL)
        return NULL;
    module = PyModule_Create(&aead_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&AeadType);
    if (PyModule_AddObject(module, "Aead", (PyObject *)&AeadType) < 0) {
        Py_DECREF(&AeadType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
