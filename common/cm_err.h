/* cm_err: the one error convention of agentcore-c.
 *
 * Functions that can fail return 0 on success or one of these negative codes.
 * Text for humans goes into a caller-supplied buffer where a function has one;
 * cm_strerror() names the code itself. */
#ifndef CM_ERR_H
#define CM_ERR_H

enum cm_err {
    CM_OK = 0,
    CM_ENOMEM = -1,    /* an allocation failed */
    CM_EINVAL = -2,    /* the input is malformed or out of bounds */
    CM_ENOENT = -3,    /* a required item is missing */
    CM_ETYPE = -4,     /* an item has the wrong type */
    CM_ETOOBIG = -5,   /* an input or a buffer would pass its cap */
    CM_EIO = -6,       /* a system call or transport failed */
    CM_ETIMEDOUT = -7, /* a deadline passed */
    CM_EUPSTREAM = -8, /* a peer answered with an error */
    CM_ECANCELED = -9, /* the caller went away */
    CM_EBUSY = -10,    /* at capacity: try again later or elsewhere */
};

/* Returns a static, never-NULL name for |err|. */
const char *cm_strerror(int err);

#endif
