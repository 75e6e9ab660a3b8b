#include "cm_err.h"

const char *cm_strerror(int err)
{
    switch (err) {
    case CM_OK:
        return "ok";
    case CM_ENOMEM:
        return "out of memory";
    case CM_EINVAL:
        return "invalid input";
    case CM_ENOENT:
        return "not found";
    case CM_ETYPE:
        return "wrong type";
    case CM_ETOOBIG:
        return "too big";
    case CM_EIO:
        return "i/o error";
    case CM_ETIMEDOUT:
        return "timed out";
    case CM_EUPSTREAM:
        return "upstream error";
    case CM_ECANCELED:
        return "canceled";
    case CM_EBUSY:
        return "busy";
    }
    return "unknown error";
}
