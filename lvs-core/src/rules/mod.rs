//! The ipvsadm rule language: parsing command lines and `-S` save files, applying them to a
//! rule set atomically, and printing ipvsadm's listings byte for byte.
