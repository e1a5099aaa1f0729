import MTASTSCore
