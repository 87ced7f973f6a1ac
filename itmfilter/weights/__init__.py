"""Weight sets: how one picture's adapted network is stored (``blob``) and the shipped
initialisation (``init``)."""
