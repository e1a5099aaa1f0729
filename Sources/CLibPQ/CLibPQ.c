#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "CLibPQ.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *load_error = "libpq was not looked for";
static char load_message[512];

#define FUNCTIONS(X) \
    X(PQconnectdbParams, PGconn *, (const char *const *, const char *const *, int)) \
    X(PQfinish, void, (PGconn *)) \
    X(PQstatus, ConnStatusType, (const PGconn *)) \
    X(PQerrorMessage, char *, (const PGconn *)) \
    X(PQsocket, int, (const PGconn *)) \
    X(PQsendQuery, int, (PGconn *, const char *)) \
    X(PQsendQueryParams, int, (PGconn *, const char *, int, const Oid *, const char *const *, const int *, const int *, int)) \
    X(PQisBusy, int, (PGconn *)) \
    X(PQconsumeInput, int, (PGconn *)) \
    X(PQgetResult, PGresult *, (PGconn *)) \
    X(PQclear, void, (PGresult *)) \
    X(PQresultStatus, ExecStatusType, (const PGresult *)) \
    X(PQresultErrorMessage, char *, (const PGresult *)) \
    X(PQntuples, int, (const PGresult *)) \
    X(PQnfields, int, (const PGresult *)) \
    X(PQgetvalue, char *, (const PGresult *, int, int)) \
    X(PQgetisnull, int, (const PGresult *, int, int))

#define POINTER(name, result, args) static result (*p_##name) args;
FUNCTIONS(POINTER)

static void load(void) {
    void *handle = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(load_message, sizeof load_message, "cannot load libpq.so.5 (install libpq5): %s", dlerror());
        load_error = load_message;
        return;
    }
#define RESOLVE(name, result, args) \
    p_##name = (result (*) args)dlsym(handle, #name); \
    if (p_##name == NULL) { \
        snprintf(load_message, sizeof load_message, "libpq.so.5 has no %s", #name); \
        load_error = load_message; \
        return; \
    }
    FUNCTIONS(RESOLVE)
    load_error = NULL;
}

const char *mtasts_pq_load(void) {
    pthread_once(&once, load);
    return load_error;
}

static int loaded(void) { return mtasts_pq_load() == NULL; }

PGconn *mtasts_PQconnectdbParams(const char *const *k, const char *const *v, int e) { return loaded() ? p_PQconnectdbParams(k, v, e) : NULL; }
void mtasts_PQfinish(PGconn *c) { if (c != NULL && loaded()) p_PQfinish(c); }
ConnStatusType mtasts_PQstatus(const PGconn *c) { return loaded() ? p_PQstatus(c) : CONNECTION_BAD; }
char *mtasts_PQerrorMessage(const PGconn *c) { return loaded() ? p_PQerrorMessage(c) : (char *)load_error; }
int mtasts_PQsocket(const PGconn *c) { return loaded() ? p_PQsocket(c) : -1; }
int mtasts_PQsendQuery(PGconn *c, const char *q) { return loaded() ? p_PQsendQuery(c, q) : 0; }
int mtasts_PQsendQueryParams(PGconn *c, const char *q, int n, const Oid *t, const char *const *v, const int *l, const int *f, int r) {
    return loaded() ? p_PQsendQueryParams(c, q, n, t, v, l, f, r) : 0;
}
int mtasts_PQisBusy(PGconn *c) { return loaded() ? p_PQisBusy(c) : 0; }
int mtasts_PQconsumeInput(PGconn *c) { return loaded() ? p_PQconsumeInput(c) : 0; }
PGresult *mtasts_PQgetResult(PGconn *c) { return loaded() ? p_PQgetResult(c) : NULL; }
void mtasts_PQclear(PGresult *r) { if (r != NULL && loaded()) p_PQclear(r); }
ExecStatusType mtasts_PQresultStatus(const PGresult *r) { return loaded() ? p_PQresultStatus(r) : PGRES_FATAL_ERROR; }
char *mtasts_PQresultErrorMessage(const PGresult *r) { return loaded() ? p_PQresultErrorMessage(r) : (char *)load_error; }
int mtasts_PQntuples(const PGresult *r) { return loaded() ? p_PQntuples(r) : 0; }
int mtasts_PQnfields(const PGresult *r) { return loaded() ? p_PQnfields(r) : 0; }
char *mtasts_PQgetvalue(const PGresult *r, int row, int column) { return loaded() ? p_PQgetvalue(r, row, column) : (char *)""; }
int mtasts_PQgetisnull(const PGresult *r, int row, int column) { return loaded() ? p_PQgetisnull(r, row, column) : 1; }
