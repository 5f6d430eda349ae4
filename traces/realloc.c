#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void){ char *p=NULL; size_t n=0; for(int i=0;i<200;i++){ n+=65536; p=realloc(p,n); memset(p,i,n);} printf("%zu\n",n); free(p); return 0;}
