#ifndef TEAL_COPENSSL_SHIM_H
#define TEAL_COPENSSL_SHIM_H

// The only C header Teal includes. OpenSSL 3.x. Function-like macros that Swift cannot import are
// wrapped here as static inline functions with a `teal_` prefix; nothing else lives here.

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>

static inline int teal_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
  return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

static inline int teal_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
  return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

static inline uint64_t teal_SSL_CTX_set_options(SSL_CTX *ctx, uint64_t options) {
  return (uint64_t)SSL_CTX_set_options(ctx, options);
}

static inline uint64_t teal_SSL_OP_NO_RENEGOTIATION(void) { return (uint64_t)SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t teal_SSL_OP_NO_TICKET(void) { return (uint64_t)SSL_OP_NO_TICKET; }
static inline uint64_t teal_SSL_OP_NO_COMPRESSION(void) { return (uint64_t)SSL_OP_NO_COMPRESSION; }

static inline long teal_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline long teal_SSL_MODE_ENABLE_PARTIAL_WRITE(void) { return SSL_MODE_ENABLE_PARTIAL_WRITE; }
static inline long teal_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER(void) { return SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; }
static inline long teal_SSL_MODE_RELEASE_BUFFERS(void) { return SSL_MODE_RELEASE_BUFFERS; }

static inline long teal_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
  return SSL_CTX_set_session_cache_mode(ctx, mode);
}

static inline int teal_SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *list) {
  return (int)SSL_CTX_set1_groups_list(ctx, list);
}

static inline size_t teal_BIO_pending(BIO *bio) { return (size_t)BIO_pending(bio); }

static inline int teal_BIO_set_mem_eof_return(BIO *bio, int value) {
  return (int)BIO_set_mem_eof_return(bio, value);
}

// For TealTLS's ByteBuffer BIO: "no bytes now, try again later" and its reset.
static inline void teal_BIO_set_retry_read(BIO *bio) { BIO_set_retry_read(bio); }
static inline void teal_BIO_clear_retry_flags(BIO *bio) { BIO_clear_retry_flags(bio); }

static inline void teal_OPENSSL_free(void *pointer) { OPENSSL_free(pointer); }

static inline int teal_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
  return (int)SSL_set_tlsext_host_name(ssl, name);
}

static inline int teal_ERR_GET_REASON(unsigned long error) { return ERR_GET_REASON(error); }

static inline const GENERAL_NAME *teal_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i) {
  return sk_GENERAL_NAME_value(names, i);
}

static inline int teal_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }

static inline void teal_GENERAL_NAMES_free(GENERAL_NAMES *names) { GENERAL_NAMES_free(names); }

static inline int teal_X509_get_signature_nid(const X509 *x) { return X509_get_signature_nid(x); }

#endif
