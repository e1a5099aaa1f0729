#ifndef MTASTS_CLIBPQ_H
#define MTASTS_CLIBPQ_H
/* libpq, opened on first use (dlopen) instead of linked: a daemon or command that never speaks
   to PostgreSQL does not load libpq and the twenty libraries it needs (Kerberos, LDAP, GnuTLS,
   OpenSSL…), nor needs them installed. The types and constants come from libpq's header; the
   functions are the ones below, each the libpq function of the same name after `mtasts_`. */
#include <postgresql/libpq-fe.h>

/* Opens libpq (once; thread-safe). NULL when it is loaded, else why it could not be. */
const char *mtasts_pq_load(void);

/* Before a successful mtasts_pq_load these do nothing and return NULL, 0 or CONNECTION_BAD. */
PGconn *mtasts_PQconnectdbParams(const char *const *keywords, const char *const *values, int expand_dbname);
void mtasts_PQfinish(PGconn *conn);
ConnStatusType mtasts_PQstatus(const PGconn *conn);
char *mtasts_PQerrorMessage(const PGconn *conn);
int mtasts_PQsocket(const PGconn *conn);
int mtasts_PQsendQuery(PGconn *conn, const char *query);
int mtasts_PQsendQueryParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                             const char *const *paramValues, const int *paramLengths, const int *paramFormats, int resultFormat);
int mtasts_PQisBusy(PGconn *conn);
int mtasts_PQconsumeInput(PGconn *conn);
PGresult *mtasts_PQgetResult(PGconn *conn);
void mtasts_PQclear(PGresult *res);
ExecStatusType mtasts_PQresultStatus(const PGresult *res);
char *mtasts_PQresultErrorMessage(const PGresult *res);
int mtasts_PQntuples(const PGresult *res);
int mtasts_PQnfields(const PGresult *res);
char *mtasts_PQgetvalue(const PGresult *res, int row, int column);
int mtasts_PQgetisnull(const PGresult *res, int row, int column);
#endif
